"""The sweep file: YAML -> typed, validated objects. Every error names the dotted YAML path
and the value (`optimizer.lr: Input should be greater than 0, got -0.1`)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lrsweep.config.schema import SHORT_NAMES, RunConfig
from lrsweep.errors import ConfigError


def load_yaml(path: str | Path) -> dict:
    """Read a sweep file with a safe loader; one-line errors for missing/invalid files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"{p}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{p}: expected a mapping of sections (name, dataset, ...), got {type(raw).__name__}")
    return raw


def expand_short(key: str) -> str:
    return SHORT_NAMES.get(key, key)


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating sections as needed."""
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value, not a section; cannot set {dotted}")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set key=value` strings. Values are parsed as YAML (`0.1`, `[1, 2]`, `true`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}", f"value is not valid YAML: {text!r}") from None
        if key.startswith("sweep."):
            raw.setdefault("sweep", {})
            if raw["sweep"] is None:
                raw["sweep"] = {}
            raw["sweep"][key[len("sweep."):]] = value
        else:
            set_dotted(raw, expand_short(key), value)
    return raw


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) else ():
        m = _model_of(arg)
        if m:
            return m
    return None


def check_unknown_keys(raw: Any, model: type[BaseModel], path: str = "") -> None:
    """Reject unknown keys with a did-you-mean, before pydantic's less friendly message."""
    if not isinstance(raw, dict):
        return
    fields = model.model_fields
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            allowed = ", ".join(fields)
            msg = f"unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "") + f" (allowed: {allowed})"
            raise ConfigError(where, msg)
        sub = _model_of(fields[key].annotation)
        if sub is not None:
            check_unknown_keys(value, sub, where)


def validation_error(e: ValidationError, prefix: str = "") -> ConfigError:
    """The first pydantic error as one line: `optimizer.lr: Input should be greater than 0, got -0.1`."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "literal")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        msg = "expected one of (" + ", ".join(a.strip("'") for a in _literal_options(err)) + ")"
    value = err.get("input")
    if err["type"] != "missing" and not isinstance(value, dict) and "got" not in msg:
        msg += f", got {value!r}"
    path = ".".join(p for p in (prefix, loc) if p)
    return ConfigError(path, msg)


def _literal_options(err) -> list[str]:
    expected = err.get("ctx", {}).get("expected", "")
    return [s.strip() for s in expected.replace(" or ", ", ").split(",") if s.strip()]


def parse_run_config(raw: dict, where: str = "") -> RunConfig:
    check_unknown_keys(raw, RunConfig)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, where) from None
