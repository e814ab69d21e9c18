"""CIFAR-10 and CIFAR-100 in the official "python version" format, as torchvision keeps them:

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
    <root>/cifar-100-python/train, test

Each file is a pickled dict: `data` uint8 [N, 3072] (each row the 1024 red, then green, then
blue values of a 32x32 image, row by row) and `labels` (CIFAR-100: `fine_labels`), read into
uint8 [N,3,32,32]. The 'test' split is the test file; `download: true` fetches the archive with
torchvision's downloader (checksum verified) when the files are not there.

Pickle can run code while it loads. These files are read with an unpickler that builds numpy
arrays and nothing else (any other global is refused, naming the file), and only the fixed
file names under dataset.root are opened.
"""
from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrsweep.config import DatasetConfig
from lrsweep.datasets.builtin import download_failed
from lrsweep.datasets_check import bad_file
from lrsweep.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    label: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels_key: str
    classes: int
    torchvision: str  # the torchvision.datasets class whose url, filename and tgz_md5 are used


LAYOUTS = {
    "cifar10": Layout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      ("test_batch",), "labels", 10, "CIFAR10"),
    "cifar100": Layout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR100"),
}
ROW = 3 * 32 * 32

# What unpickling a CIFAR file may construct: numpy arrays and dtypes (Python 2's pickles name
# numpy.core, Python 3's numpy._core), and _codecs.encode (how Python 3 pickles bytes at protocol 2).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        modules = _ALLOWED.get((module, name))
        if modules is None:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR file never does")
        for m in modules:
            try:
                return getattr(importlib.import_module(m), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot find {module}.{name}")


def missing(cfg: DatasetConfig) -> tuple[Path, list[str]]:
    """The folder of the files and the names of those not there."""
    lay = LAYOUTS[cfg.name]
    folder = Path(cfg.root).expanduser() / lay.folder
    return folder, [f for f in lay.train + lay.test if not (folder / f).is_file()]


def check_available(cfg: DatasetConfig) -> None:
    lay = LAYOUTS[cfg.name]
    folder, absent = missing(cfg)
    if absent and not cfg.download:
        expected = ", ".join(lay.train + lay.test)
        what = f"no {lay.label} files" if len(absent) == len(lay.train + lay.test) else f"missing {', '.join(absent)}"
        raise ConfigError("dataset.root", f"{what} under {folder} (expected {expected}, the python version); "
                                          "put them there or set dataset.download: true")


def read_batch(path: Path, labels_key: str, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR file as (uint8 [N,3,32,32], int64 [N]); ConfigError naming the file if it is not one."""
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="latin1").load()  # latin1: Python 2's str, as torchvision reads them
    except OSError as e:
        raise ConfigError("dataset.root", f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a damaged or foreign pickle raises anything
        raise bad_file(path, f"not a CIFAR batch file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(d, dict):
        raise bad_file(path, f"holds a {type(d).__name__}, expected the dict of a CIFAR batch")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get(labels_key)
    for key, value in (("data", data), (labels_key, labels)):
        if value is None:
            raise bad_file(path, f"has no {key!r} (keys: {', '.join(map(str, d)) or 'none'})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        shown = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad_file(path, f"'data' is {shown}, expected uint8 [N, {ROW}]")
    try:
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    except (TypeError, ValueError, OverflowError):
        raise bad_file(path, f"{labels_key!r} are not integer labels") from None
    if y.ndim != 1 or len(y) != len(data):
        raise bad_file(path, f"{len(y) if y.ndim == 1 else list(y.shape)} {labels_key} for {len(data)} images")
    if len(y) == 0:
        raise bad_file(path, "holds no images")
    if y.min() < 0 or y.max() >= classes:
        raise bad_file(path, f"holds label {int(y.min() if y.min() < 0 else y.max())}; "
                             f"the labels of {classes} classes are 0-{classes - 1}")
    x = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return x, y


def load(cfg: DatasetConfig):
    lay = LAYOUTS[cfg.name]
    folder, absent = missing(cfg)
    if absent:  # download is on (check_available passed)
        _download(cfg, lay, folder)
    parts = []
    for names in (lay.train, lay.test):
        xs, ys = zip(*(read_batch(folder / n, lay.labels_key, lay.classes) for n in names))
        parts += [torch.cat(xs), torch.cat(ys)]
    return (*parts, lay.classes)


def _download(cfg: DatasetConfig, lay: Layout, folder: Path) -> None:
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    tv = getattr(tvd, lay.torchvision)
    root = Path(cfg.root).expanduser()
    try:
        download_and_extract_archive(tv.url, download_root=str(root), filename=tv.filename, md5=tv.tgz_md5)
    except Exception as e:  # noqa: BLE001 - network, disk, checksum
        raise download_failed(lay.label, e, f"extract {tv.url} into {root}") from None
    _, absent = missing(cfg)
    if absent:
        raise ConfigError("dataset.download", f"the {lay.label} archive gave no {', '.join(absent)} under {folder}")
