"""What every dataset goes through after its loader: the validation split, the fixed subsets,
the per-channel statistics, and the key of the in-process cache.

val_split (a fraction), train_subset and val_subset are drawn with dataset.subset_seed (each
with its own generator, so changing one does not change the others).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from lrsweep.config import DatasetConfig
from lrsweep.errors import ConfigError

# Fields that pick a part of the loaded data, not which data: left out of the raw key (one load
# of the files or one call of a factory serves every subset of them).
PART_FIELDS = ("val_split", "train_subset", "val_subset", "subset_seed")


def split(cfg: DatasetConfig, train_x, train_y, val_x: Optional[torch.Tensor], val_y):
    """(train_x, train_y, val_x, val_y) after val_split, train_subset and val_subset. `val_x`
    None: the dataset has no held-out split of its own (then val_split must be a fraction)."""
    if cfg.val_split != "test":
        n = len(train_y)
        n_val = min(max(round(cfg.val_split * n), 1), n - 1)
        perm = torch.randperm(n, generator=gen(cfg.subset_seed, 0))
        val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
        val_x, val_y, train_x, train_y = train_x[val], train_y[val], train_x[train], train_y[train]
    elif val_x is None:
        raise ConfigError("dataset.val_split", f"{cfg.label} has no validation split of its own: "
                                               "hold out a fraction of the training set (e.g. val_split: 0.1)")
    train_x, train_y = subset(train_x, train_y, cfg.train_subset, cfg.subset_seed, 1, "dataset.train_subset", "train")
    val_x, val_y = subset(val_x, val_y, cfg.val_subset, cfg.subset_seed, 2, "dataset.val_subset", "validation")
    return train_x, train_y, val_x, val_y


def gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 3 + salt)  # one stream per purpose


def subset(x, y, k, seed, salt, path, what):
    if k is None:
        return x, y
    if k > len(y):
        raise ConfigError(path, f"is {k} but the {what} split has only {len(y)} examples")
    idx = torch.randperm(len(y), generator=gen(seed, salt))[:k].sort().values
    return x[idx], y[idx]


def channel_stats(x: torch.Tensor, chunk=8192):
    """Per-channel mean/std [1,C,1,1] in float64 chunks (no full float copy of a uint8 set)."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    ss = torch.zeros_like(s)
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].double().transpose(0, 1).reshape(x.shape[1], -1)
        s += b.sum(1)
        ss += (b * b).sum(1)
    n = x.numel() / x.shape[1]
    mean = s / n
    std = (ss / n - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def cache_key(cfg: DatasetConfig, raw: bool = False) -> str:
    """What makes two configs the same data. `raw`: the same files or factory call, before the
    split and subsets. Includes the factory, its args and folder; leaves out what changes
    neither (download, the per-epoch subset, the size guard)."""
    d = cfg.model_dump(exclude={"epoch_subset", "download", "max_gib", *(PART_FIELDS if raw else ())})
    d["root"] = str(Path(cfg.root).expanduser().resolve())
    if cfg.name != "synthetic":
        d.pop("synthetic")
    return repr(sorted(d.items()))
