"""The sweep file: YAML -> typed, validated objects. Every error names the dotted YAML path
and the value (`optimizer.lr: Input should be greater than 0, got -0.1`)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lrsweep.config.schema import SHORT_NAMES, RunConfig
from lrsweep.errors import ConfigError, quote, shorten


# Limits on a sweep file (and on each --set value), so that a hostile or broken one is refused
# with one line at once instead of hanging, exhausting memory or the stack.
MAX_FILE_BYTES = 1 << 20  # a sweep file is a few hundred bytes; 1 MiB is far beyond any real one
MAX_DEPTH = 64  # nesting of mappings and lists (a config needs about 5)
MAX_VALUES = 1_000_000  # values after aliases are expanded ("billion laughs")


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and nesting deeper than MAX_DEPTH."""
    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep (the limit)",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` may be overridden: that is what merge keys are for
                key = self.construct_object(key_node, deep=False)
                try:
                    if key in first:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {quote(key)} (first at line {first[key]}); a key may "
                            "appear once", key_node.start_mark)
                    first[key] = key_node.start_mark.line + 1
                except TypeError:
                    continue  # unhashable: the base constructor says so
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict, open_: set) -> int:
    """Values under `node` with every alias expanded (memoized: linear in the file's size)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a value that contains it (a loop)",
                                          node.start_mark)
    open_.add(id(node))
    children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else ()
    flat = [c for pair in children for c in pair] if isinstance(node, yaml.MappingNode) else list(children)
    total = 1
    for child in flat:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_VALUES:
            raise yaml.composer.ComposerError(None, None, f"aliases expand it to more than {MAX_VALUES} values "
                                              "(the limit)", node.start_mark)
    open_.discard(id(node))
    sizes[id(node)] = total
    return total


def parse_yaml(text: str) -> Any:
    """YAML text -> Python values, within the limits above (yaml.YAMLError otherwise)."""
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4300 digits
            raise yaml.constructor.ConstructorError(None, None, shorten(str(e)), node.start_mark) from None
    finally:
        loader.dispose()


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"invalid YAML{where}: {shorten(problem)}"


def read_text(p: Path, what: str = "config file", limit: int = MAX_FILE_BYTES) -> str:
    """A text file lrsweep reads as input: exists, is a regular file, at most `limit` bytes, UTF-8."""
    try:
        if not p.exists():
            raise ConfigError("", f"{what} not found: {p}")
        if p.is_dir():
            raise ConfigError("", f"{p} is a folder, not a {what}")
        if not p.is_file():
            raise ConfigError("", f"{p} is not a regular file (a device or pipe?); give a {what}")
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError("", f"cannot read {p}: {e.strerror or e}") from None
    if len(data) > limit:
        raise ConfigError("", f"{p}: larger than {limit} bytes (the limit for a {what})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                              "save it as UTF-8") from None


def load_yaml(path: str | Path) -> dict:
    """Read a sweep file with a safe loader; one-line errors for missing/invalid files."""
    p = Path(path)
    text = read_text(p)
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError("", f"{p}: {_yaml_problem(e)}") from None
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


def apply_overrides(raw: dict, overrides: list[str], warn_axes: bool = True) -> dict:
    """Apply `--set key=value` strings. Values are parsed as YAML (`0.1`, `[1, 2]`, `true`).
    `warn_axes`: warn when a key is a sweep axis (the grid overwrites it; not for the range
    test, which uses the base config and ignores the axes)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", f"expected key=value, got {quote(item)}")
        key, text = item.split("=", 1)
        key = key.strip()
        if "" in key.split("."):
            raise ConfigError("--set", f"expected key=value with a dotted key such as train.steps, got {quote(item)}")
        if len(text) > MAX_FILE_BYTES:
            raise ConfigError(f"--set {key}", f"value longer than {MAX_FILE_BYTES} characters (the limit)")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}", f"{_yaml_problem(e)}, in {quote(text)}") from None
        if key.startswith("sweep."):
            if raw.get("sweep") is None:
                raw["sweep"] = {}
            if not isinstance(raw["sweep"], dict):
                raise ConfigError("sweep", f"is a {type(raw['sweep']).__name__}, not a mapping of axis -> values; "
                                           f"cannot set {key}")
            raw["sweep"][key[len("sweep."):]] = value
        else:
            full = expand_short(key)
            axis = _axis_of(raw.get("sweep"), full)
            if axis is not None and warn_axes:  # every grid cell overwrites it: say so rather than let it do nothing
                import warnings

                from lrsweep.errors import LrsweepWarning

                warnings.warn(f"--set {key}: {key} is a sweep axis (sweep.{axis}), so this changes no run: set its "
                              f"values with --set sweep.{axis}=[...] (e.g. [{quote(value)}])", LrsweepWarning, stacklevel=2)
            if full in BUDGETS and value is not None and isinstance(raw.get("train"), dict):
                for other in BUDGETS - {full}:  # one budget: the one set replaces the file's
                    raw["train"].pop(other.split(".")[1], None)
            set_dotted(raw, full, value)
    return raw


BUDGETS = {"train.epochs", "train.steps", "train.examples"}


def _axis_of(sweep: Any, full: str) -> Optional[str]:
    """The axis name (as the sweep file writes it) that sets field `full`, or None."""
    if not isinstance(sweep, dict):
        return None
    names = [k for k in sweep if k != "zip"]
    zips = sweep.get("zip")
    for group in (zips if isinstance(zips, list) else [zips]) if zips else []:
        names += list(group) if isinstance(group, dict) else []
    return next((n for n in names if expand_short(str(n)) == full), None)


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
        where = shorten(f"{path}.{key}" if path else str(key))
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
    errors = e.errors()
    err = errors[0]
    if err["type"] == "literal_error":  # a union (`'test'` or a number): the number's error says more
        err = next((x for x in errors[1:] if x["type"] == "finite_number" and x["loc"][:-1] == err["loc"][:-1]), err)
    loc = ".".join(str(p) for p in err["loc"]
                   if not (str(p).startswith(("function-after", "literal")) or str(p) in ("float", "int")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "literal_error":
        msg = "expected one of (" + ", ".join(a.strip("'") for a in _literal_options(err)) + ")"
    value = err.get("input")
    if err["type"] != "missing" and not isinstance(value, dict) and "got" not in msg:
        msg += f", got {quote(value)}"
    path = ".".join(p for p in (prefix, loc) if p)
    return ConfigError(path, msg)


def _literal_options(err) -> list[str]:
    expected = err.get("ctx", {}).get("expected", "")
    return [s.strip() for s in expected.replace(" or ", ", ").split(",") if s.strip()]


def parse_run_config(raw: dict, where: str = "", keys_checked: bool = False) -> RunConfig:
    """`raw` as a RunConfig (ConfigError naming the field otherwise). `keys_checked`: the caller
    ran check_unknown_keys on these keys already (the grid, once per axis value, not per cell)."""
    if not keys_checked:
        check_unknown_keys(raw, RunConfig)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, where) from None
