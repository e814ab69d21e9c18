"""checkpoint.pt: the whole state of a sequential run at an epoch end, so a restarted run
continues from it and gives the same numbers as an uninterrupted one (on the CPU).

Written with an atomic replace; a checkpoint that cannot be read, or belongs to another config
(e.g. written by another version of the code), costs a restart, never the run.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from lrsweep import storage

CHECKPOINT = storage.CHECKPOINT
VERSION = 2  # 2: the divergence rule's EMA and the stop reason (older ones: the run restarts)


def save(path: Path, state: dict) -> None:
    storage.atomic_replace(path, lambda f: torch.save({"version": VERSION, **state}, f), binary=True)


def load(path: Path, config_id: str) -> Optional[dict]:
    """The checkpoint of the config with id `config_id`, or None (then the run starts over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a bad checkpoint costs a restart, never the run
        warnings.warn(f"ignoring unreadable checkpoint {path}: {type(e).__name__}: {e}")
        return None
    if not isinstance(state, dict) or state.get("version") != VERSION or state.get("config_id") != config_id:
        return None
    return state
