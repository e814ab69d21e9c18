"""Datasets as whole tensors on the device: the trainer draws batches by index, no DataLoader.

Image datasets are stored as uint8 [N,C,H,W] (Tiny ImageNet as float32 would be ~5 GB) and
normalized per batch with `Data.normalize`; digits, synthetic and a factory's float data are
stored as float32.

One module per kind of source, each loader returning (train_x, train_y, val_x, val_y,
num_classes), val = the 'test' split (None: the source has none, val_split must be a fraction):
builtin.py (mnist, fashion-mnist, digits, synthetic, tiny-imagenet), cifar.py (cifar10,
cifar100), imagefolder.py, factory.py (the user's own function); images.py decodes image files
once into a cache file; splits.py holds out val_split, draws the subsets, computes the stats.

Before anything trains (sweep.preflight): check_available (the files are there; cheap), then
datasets_check.check_files, which reads the headers of MNIST's and Tiny ImageNet's files and,
for CIFAR, image folders and factories, loads them once on the CPU (`describe`: kept in the
in-process cache, so that training in this process does not load them again).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import torch

from lrsweep.config import DatasetConfig
from lrsweep.datasets import builtin, cifar, factory, imagefolder
from lrsweep.datasets.builtin import HOLDOUT_SEED, MNIST_DIRS, MNIST_FILES, TINY_DIR, TINY_URL  # noqa: F401
from lrsweep.datasets.splits import cache_key, channel_stats, gen as _gen, split  # noqa: F401
from lrsweep.datasets_check import LOADED_TO_CHECK, check_files

LOADERS = {"mnist": builtin.mnist, "fashion-mnist": builtin.mnist, "tiny-imagenet": builtin.tiny_imagenet,
           "digits": builtin.digits, "synthetic": builtin.synthetic, "cifar10": cifar.load,
           "cifar100": cifar.load, "imagefolder": imagefolder.load}


@dataclass
class Data:
    name: str
    train_x: torch.Tensor  # uint8 [N,C,H,W] for image datasets, float32 otherwise
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: torch.Tensor  # [1,C,1,1], from the train split, in the units of train_x
    std: torch.Tensor

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def to(self, device) -> "Data":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        return Data(**moved)


@dataclass(frozen=True)
class Summary:
    """What preflight needs of a loaded dataset, before its split and subsets."""
    n_train: int
    n_test: int  # 0: no held-out split of its own
    input_shape: tuple[int, int, int]
    num_classes: int

    @property
    def counts(self) -> tuple[int, int]:
        return self.n_train, self.n_test


# --------------------------------------------------------------------------- public API

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 2
_SUMMARIES: dict[str, Summary] = {}  # by cache_key(cfg, raw=True)


def load_data(cfg: DatasetConfig, device="cpu") -> Data:
    """Load (or reuse from the in-process cache) the dataset described by cfg, on device."""
    key = cache_key(cfg)
    data = _CACHE.get((key, str(device)))
    if data is None and (key, "cpu") in _CACHE:
        data = _CACHE[(key, "cpu")].to(device)  # loaded on the CPU by preflight
    if data is None:
        check_available(cfg)
        if cfg.factory is None and cfg.name not in LOADED_TO_CHECK:
            check_files(cfg)  # a damaged file stops the sweep naming it (a ConfigError), never fails a run
        loader = factory.load if cfg.factory is not None else LOADERS[cfg.name]
        train_x, train_y, val_x, val_y, num_classes = loader(cfg)
        _SUMMARIES[cache_key(cfg, raw=True)] = Summary(len(train_y), 0 if val_y is None else len(val_y),
                                                       tuple(train_x.shape[1:]), num_classes)
        data = _finish(cfg, train_x, train_y, val_x, val_y, num_classes).to(device)
    _CACHE[(key, str(device))] = data
    _CACHE.move_to_end((key, str(device)))
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def describe(cfg: DatasetConfig) -> Summary:
    """Counts, input shape and classes of the dataset, loading it (on the CPU) if this process
    has not: for the sources whose checks need their contents (LOADED_TO_CHECK, factories)."""
    key = cache_key(cfg, raw=True)
    if key not in _SUMMARIES:
        load_data(cfg)
    return _SUMMARIES[key]


def clear_cache() -> None:
    _CACHE.clear()
    _SUMMARIES.clear()


def check_available(cfg: DatasetConfig) -> None:
    """Raise ConfigError if the files are missing and download is off, or a factory's module
    cannot be imported. Cheap: decodes nothing."""
    if cfg.factory is not None:
        factory.check_importable(cfg)
    elif cfg.name in cifar.LAYOUTS:
        cifar.check_available(cfg)
    elif cfg.name == "imagefolder":
        imagefolder.check_available(cfg)
    else:
        builtin.check_available(cfg)


def _finish(cfg, train_x, train_y, val_x, val_y, num_classes) -> Data:
    train_x, train_y, val_x, val_y = split(cfg, train_x, train_y, val_x, val_y)
    mean, std = channel_stats(train_x)
    return Data(cfg.label, train_x, train_y.long(), val_x, val_y.long(), num_classes,
                tuple(train_x.shape[1:]), mean, std)
