"""What the benchmark trains: the grid, the variants, and the MNIST files it reads.

The data root is the caller's (`data_root`), else $LRSWEEP_DATA, else ../shared/datasets
relative to the current directory when it holds MNIST (the layout of a checkout next to a
shared data folder), else generated IDX files of MNIST's shape: never a path relative to where
lrsweep is installed. A root that is named (argument or variable) must hold MNIST: benchmarking
generated data by mistake would cost minutes and look plausible.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lrsweep.errors import ParameterError, UserError

VARIANTS = ("plain", "sequential", "vectorized", "auto")
EXTRA_VARIANTS = ("options",)  # per member-step timings of every engine option (not a grid run)
# The full grid on an idle 2-core CPU (README): plain ~3 min, each lrsweep variant ~70 s, so
# about 7 minutes; `options` adds about a minute and runs by default with --quick only (or ask:
# --variants all). On a busy machine, multi-threaded kernels (plain, sequential) slow down most.
DEFAULT_FULL = VARIANTS
DEFAULT_QUICK = ("options",) + VARIANTS
DATA_ENV = "LRSWEEP_DATA"
SHARED_DATASETS = Path("../shared/datasets")
MNIST_TRAIN_IMAGES = Path("MNIST") / "raw" / "train-images-idx3-ubyte"


@dataclass
class BenchGrid:
    batch_sizes: tuple[int, ...] = (32, 128, 512)
    n_lr: int = 8
    lr_min: float = 1e-3
    lr_max: float = 1.0
    train_subset: int = 8192
    test_subset: Optional[int] = None  # None: the whole 10k test set
    momentum: float = 0.9
    seed: int = 0
    epochs: int = 1

    @property
    def lrs(self) -> list[float]:
        return [float(f"{v:.12g}") for v in np.geomspace(self.lr_min, self.lr_max, self.n_lr)]

    @property
    def cells(self) -> list[tuple[int, float]]:
        return [(b, lr) for b in self.batch_sizes for lr in self.lrs]


FULL = BenchGrid()
QUICK = BenchGrid(batch_sizes=(32, 128), n_lr=4, train_subset=2048, test_subset=2000)


def choose_variants(variants: Optional[str] = None, quick: bool = False) -> tuple[str, ...]:
    """'plain,vectorized' -> the variants to run; None: the defaults (all with `quick`); 'all': all."""
    if variants is None:
        return DEFAULT_QUICK if quick else DEFAULT_FULL
    if variants.strip() == "all":
        return DEFAULT_QUICK
    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    check_variants(chosen)
    return chosen


def check_variants(variants: tuple[str, ...]) -> None:
    unknown = [v for v in variants if v not in VARIANTS + EXTRA_VARIANTS]
    if unknown:
        raise ParameterError("variants", f"expected some of ({', '.join(EXTRA_VARIANTS + VARIANTS)}), "
                                         f"got {', '.join(map(repr, unknown))}")


# --------------------------------------------------------------------------- data


def has_mnist(root: str | Path) -> bool:
    return (Path(root) / MNIST_TRAIN_IMAGES).is_file()


def find_mnist(data_root: Optional[str | Path] = None) -> Optional[Path]:
    """The folder holding MNIST/raw/ (see the module docstring for where it is looked for), or
    None: no MNIST, generate data."""
    if data_root is not None:
        if not has_mnist(data_root):
            raise ParameterError("data_root", f"no {MNIST_TRAIN_IMAGES} in {data_root}")
        return Path(data_root).resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        if not has_mnist(env):
            raise UserError(f"{DATA_ENV}: no {MNIST_TRAIN_IMAGES} in {env}")
        return Path(env).resolve()
    return SHARED_DATASETS.resolve() if has_mnist(SHARED_DATASETS) else None


def write_fake_mnist(root: Path, n_train: int = 60000, n_test: int = 10000, seed: int = 0,
                     folder: str = "MNIST") -> Path:
    """Generated MNIST of the real shape (uint8 28x28, 10 classes) in torchvision's IDX files:
    a fixed random stroke-like template per class plus noise, so it is learnable. `folder`:
    FashionMNIST for Fashion-MNIST's layout (same format and shape)."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) > 0.8).astype(np.float32)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = templates[labels] * 200 + rng.normal(0, 40, (n, 28, 28))
        images = np.clip(images, 0, 255).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return Path(root)


def subset_indices(n: int, k: Optional[int], subset_seed: int, salt: int) -> Optional[torch.Tensor]:
    """The indices lrsweep's dataset.train_subset (salt 1) / val_subset (salt 2) picks."""
    if k is None:
        return None
    from lrsweep.datasets import _gen
    return torch.randperm(n, generator=_gen(subset_seed, salt))[:k].sort().values
