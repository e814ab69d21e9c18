"""Which config fields make a run's identity, and which may differ inside a vectorized group:
read from the roles declared on the schema's fields (schema.py), so they are listed once."""
from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from lrsweep.config.schema import RunConfig


def _extra(field) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


@functools.lru_cache(maxsize=None)
def field_roles(model: type[BaseModel] = RunConfig, inherited: tuple = ()) -> dict[tuple[str, ...], dict]:
    """(section, field) path -> its roles, for every leaf field (a section's roles apply to its
    fields unless a field declares its own)."""
    out: dict[tuple[str, ...], dict] = {}
    for name, field in model.model_fields.items():
        roles = {**dict(inherited), **_extra(field)}
        sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if sub is not None:
            for path, r in field_roles(sub, tuple(sorted(roles.items()))).items():
                out[(name, *path)] = r
        else:
            out[(name,)] = roles
    return out


def paths_with(role: str, value: Any) -> list[tuple[str, ...]]:
    return [p for p, r in field_roles().items() if r.get(role, _DEFAULTS[role]) == value]


_DEFAULTS = {"identity": True, "member": False}


def _drop(d: dict, path: tuple[str, ...]) -> None:
    node = d
    for p in path[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def identity_dict(cfg: RunConfig) -> dict:
    """The config as its run id sees it: NOT_IDENTITY fields removed, IDENTITY_UNLESS_DEFAULT
    fields removed while at their default."""
    d = cfg.model_dump(mode="json")
    for path in paths_with("identity", False):
        _drop(d, path)
    for path in paths_with("identity", "unless-default"):
        model: Any = RunConfig
        for p in path[:-1]:
            model = model.model_fields[p].annotation
        node = d
        for p in path[:-1]:
            node = node.get(p, {})
        default = model.model_fields[path[-1]].get_default(call_default_factory=True)
        if path[-1] in node and node[path[-1]] == default:
            node.pop(path[-1])
    return d


def group_dict(cfg: RunConfig) -> dict:
    """The config without its MEMBER fields: runs with equal group dicts may train as one
    vectorized group."""
    d = cfg.model_dump(mode="json")
    for path in paths_with("member", True):
        _drop(d, path)
    return d
