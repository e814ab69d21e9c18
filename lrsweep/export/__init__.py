"""`lrsweep export`: a sweep folder's runs in other tools' formats.

- tables.py: the runs as DataFrames (one row per run, or one per logged step, with the run's
  config fields as dotted columns), and the step table written as parquet or jsonl;
- tensorboard.py: one TensorBoard run per grid cell, with its step and evaluation scalars and
  its hyperparameters and headline metrics for the HParams tab.

TensorBoard and pyarrow are optional (the `export` and `parquet` extras): `require` turns a
missing one into a one-line UserError that says what to install.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from lrsweep.errors import UserError

FORMATS = ("parquet", "jsonl")  # the step table's (tables.write_steps)
# Python module -> (the extra that installs it, the package pip would install alone)
EXTRAS = {"tensorboard": ("export", "tensorboard"), "pyarrow": ("parquet", "pyarrow")}


def no_runs(paths) -> UserError:
    """The error for sweep folders without a finished run."""
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    return UserError(f"no finished runs under {', '.join(map(str, paths))}")


class MissingExtra(UserError):
    """An optional dependency of an export format is not installed."""


def require(module: str, what: str):
    """Import `module` (a key of EXTRAS), or say how to install it: MissingExtra."""
    extra, package = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{what} needs {package}, which is not installed: pip install 'lrsweep[{extra}]' "
                           f"(or: pip install {package})") from None
