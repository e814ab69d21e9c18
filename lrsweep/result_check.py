"""Is a parsed result.json a run record? `validate_result` checks it against the record type
(results.RunResult): every required field, every known field of its type, a known status.
A result.json that is not one marks an unfinished run (storage.read_result): it is redone,
and summarize skips it, naming it; neither crashes on it."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from lrsweep.errors import quote
from lrsweep.results import RunResult, RunStatus


_RESULT_FIELDS: dict[str, tuple[Any, bool]] = {}  # filled on first use (the type hints are resolved then)


def _result_fields() -> dict[str, tuple[Any, bool]]:
    """result.json's fields: name -> (type, required), from results.RunResult."""
    if not _RESULT_FIELDS:
        hints = typing.get_type_hints(RunResult)
        for f in dataclasses.fields(RunResult):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            _RESULT_FIELDS[f.name] = (hints[f.name], required)
    return _RESULT_FIELDS


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a RunResult field's type (NaN is stored as null)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is RunStatus:
        return isinstance(value, str) and value in {s.value for s in RunStatus}
    if hint in (int, float):
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    kind = origin or hint
    return isinstance(value, {dict: dict, list: list, tuple: list, str: str}.get(kind, object))


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    names = {type(None): "null", int: "an integer", float: "a number", str: "a string", dict: "an object"}
    kind = typing.get_origin(hint) or hint
    return names.get(kind) or ("a list" if kind in (list, tuple) else str(hint))


def validate_result(data: Any) -> Optional[str]:
    """Why `data` (a parsed result.json) is not a run record (results.RunResult), or None if it
    is one: every required field there, every known field of its type, a known status."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for name, (hint, required) in _result_fields().items():
        if name not in data:
            if required:
                return f"no {name!r} field"
        elif not _fits(data[name], hint):
            if name == "status":
                return f"status {quote(data[name])} is not one of ({', '.join(s.value for s in RunStatus)})"
            return f"{name} is {quote(data[name])}, not {_type_name(hint)}"
    if data["batch_size"] < 1:
        return f"batch_size is {data['batch_size']}, not >= 1"
    return None if data["run_id"] else "run_id is empty"
