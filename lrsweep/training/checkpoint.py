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
from lrsweep.errors import LrsweepWarning, shorten

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
        warnings.warn(LrsweepWarning(f"ignoring unreadable checkpoint {path}: {type(e).__name__}: {shorten(str(e))}"))
        return None
    if not isinstance(state, dict) or state.get("version") != VERSION or state.get("config_id") != config_id:
        return None
    return state


def restore(path: Path, state: dict, model, optimizer, schedule, order, tracker, device: torch.device) -> bool:
    """Load a checkpoint (load's) into a fresh run's objects. False, with a warning, when it does
    not fit them (the right version, but keys missing or tensors of other shapes): the caller
    starts the run over from fresh objects, as those may be half loaded."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        order.load_state_dict(state["order"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        tracker.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - a bad checkpoint costs a restart, never the run
        reason = shorten(" ".join(f"{type(e).__name__}: {e}".split()))
        warnings.warn(LrsweepWarning(f"ignoring checkpoint {path}, which does not fit this run ({reason}); "
                                     "the run starts over"))
        return False
    return True
