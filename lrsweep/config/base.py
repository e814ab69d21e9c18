"""The strict base of every config section: unknown keys, NaN/inf and booleans in number fields
are refused."""
from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, field_validator


def _numeric(annotation) -> bool:
    """Whether a field holds numbers (int, float, Optional/Union/list/tuple of them), not bools."""
    if annotation in (int, float):
        return True
    return any(_numeric(a) for a in get_args(annotation))


def _has_bool(value) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


class Strict(BaseModel):
    # allow_inf_nan=False: NaN and inf are refused in every float field (`epochs: .inf` trains forever).
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info):
        """pydantic takes `true` for 1 in a number field (a batch size of `true` trained with B = 1)."""
        if _has_bool(v) and _numeric(cls.model_fields[info.field_name].annotation):
            shown = str(v).lower() if isinstance(v, bool) else "[" + ", ".join(
                str(x).lower() if isinstance(x, bool) else repr(x) for x in v) + "]"
            raise ValueError(f"expected a number, got {shown}")
        return v


