"""Dataset files checked before anything trains (the sweep's preflight, and load_data): a
damaged file is the user's to fix, so it stops the sweep with one line naming the file, and is
never recorded as a run result.

- MNIST / Fashion-MNIST IDX files: magic number, header, size (= header + the sizes it
  promises), images and labels of a split the same count, labels within the 10 classes.
- CIFAR, image folders and factories (LOADED_TO_CHECK): checked as they are loaded, once,
  on the CPU (datasets.describe): a CIFAR file's arrays and labels, every image of a folder,
  what a factory returns.
- How many training examples a config gets (after val_split, train_subset, epoch_subset), so
  that a batch size larger than an epoch is refused by `plan` as well as by `run`.

Cheap for the others: reads headers and label files (60 kB for MNIST), never decodes an image.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from lrsweep.config import DatasetConfig
from lrsweep.errors import ConfigError

IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes (every MNIST file)
MNIST_CLASSES = 10
DIGITS_SIZE = 1797  # scikit-learn's bundled digits (fixed); 'test' holds out 20% of them
INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "digits": (1, 8, 8), "tiny-imagenet": (3, 64, 64),
                "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
CLASSES = {"mnist": 10, "fashion-mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
LOADED_TO_CHECK = ("cifar10", "cifar100", "imagefolder")  # and every factory


def bad_file(path: Path, problem: str) -> ConfigError:
    return ConfigError("dataset.root", f"{path}: {problem}; replace it (or delete it and set dataset.download: true)")


def idx_header(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions an IDX file of `ndim` dimensions declares, checked against its size."""
    head = 4 + 4 * ndim
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(head)
    except OSError as e:
        raise ConfigError("dataset.root", f"cannot read {path}: {e.strerror or e}") from None
    if size == 0:
        raise bad_file(path, "the file is empty")
    if size < head:
        raise bad_file(path, f"{size} bytes: too short for an IDX header ({head} bytes)")
    magic = int.from_bytes(header[:4], "big")
    expected = (IDX_UBYTE << 8) | ndim
    if magic != expected:
        what = "image" if ndim == 3 else "label"
        raise bad_file(path, f"not an IDX {what} file (magic number 0x{magic:08x}, expected 0x{expected:08x})")
    dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] == 0 or math.prod(dims) == 0:
        raise bad_file(path, f"holds no data (dimensions {dims})")
    if size != head + math.prod(dims):
        raise bad_file(path, f"{size} bytes, but its header promises {' x '.join(map(str, dims))} = "
                             f"{head + math.prod(dims)} (truncated or damaged)")
    return dims


def check_idx_split(images: Path, labels: Path) -> int:
    """The number of examples of one split (images + labels files), or ConfigError naming the file."""
    n_images = idx_header(images, 3)[0]
    n_labels = idx_header(labels, 1)[0]
    if n_images != n_labels:
        raise bad_file(labels, f"{n_labels} labels for the {n_images} images of {images.name}")
    with open(labels, "rb") as f:
        f.seek(8)
        top = max(f.read())
    if top >= MNIST_CLASSES:
        raise bad_file(labels, f"holds label {top}; the labels of {MNIST_CLASSES} classes are 0-{MNIST_CLASSES - 1}")
    return n_images


def check_files(cfg: DatasetConfig) -> Optional[tuple[int, int]]:
    """Check the dataset's files, if they are there; (train, test) example counts when known
    without decoding (None: not yet downloaded, or a dataset counted elsewhere). CIFAR, image
    folders and factories are loaded for it (on the CPU, once per process)."""
    from lrsweep.datasets.builtin import MNIST_DIRS, MNIST_FILES, TINY_DIR, tiny_present

    if cfg.factory is not None or cfg.name in LOADED_TO_CHECK:
        from lrsweep.datasets import cifar, describe

        if cfg.name in cifar.LAYOUTS and cifar.missing(cfg)[1]:
            return None  # download is on (check_available passed): load_data checks what it writes
        return describe(cfg).counts
    root = Path(cfg.root).expanduser()
    if cfg.name in MNIST_DIRS:
        raw = root / MNIST_DIRS[cfg.name][0] / "raw"
        paths = [raw / f for f in MNIST_FILES]
        if not all(p.is_file() for p in paths):
            return None  # check_available says what is missing; a download writes them
        return check_idx_split(paths[0], paths[1]), check_idx_split(paths[2], paths[3])
    if cfg.name == "digits":
        test = round(0.2 * DIGITS_SIZE)
        return DIGITS_SIZE - test, test
    if cfg.name == "synthetic":
        return cfg.synthetic.n_train, cfg.synthetic.n_val
    base = root / TINY_DIR
    if cfg.name == "tiny-imagenet" and tiny_present(base):
        wnids = (base / "wnids.txt").read_text().split()
        if not wnids:
            raise bad_file(base / "wnids.txt", "lists no classes")
        train = 0
        for w in wnids:
            d = base / "train" / w / "images"
            if not d.is_dir():
                raise ConfigError("dataset.root", f"{d}: missing (wnids.txt lists class {w})")
            train += sum(f.endswith(".JPEG") for f in os.listdir(d))
        val = sum(1 for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if "\t" in line)
        return train, val
    return None


def input_shape(cfg: DatasetConfig) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's examples (ConfigError for a synthetic shape that is none)."""
    if cfg.name == "synthetic":
        shape = cfg.synthetic.shape
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError("dataset.synthetic.shape", f"expected [C, H, W] with positive sizes, got {shape}")
        return tuple(shape)  # type: ignore[return-value]
    if cfg.name == "imagefolder":
        return 3, cfg.image_size, cfg.image_size
    if cfg.factory is not None:
        from lrsweep.datasets import describe

        return describe(cfg).input_shape
    return INPUT_SHAPES[cfg.name]


def num_classes(cfg: DatasetConfig) -> Optional[int]:
    """Classes of the dataset (None: tiny-imagenet's, in its wnids.txt). An image folder's and a
    factory's are known once loaded (check_files loads them)."""
    if cfg.name == "synthetic":
        return cfg.synthetic.classes
    if cfg.factory is not None or cfg.name == "imagefolder":
        from lrsweep.datasets import describe

        return describe(cfg).num_classes
    return CLASSES.get(cfg.name)


def train_examples(cfg: DatasetConfig, counts: tuple[int, int]) -> int:
    """The training examples of the config, from the (train, test) counts of its files: as
    datasets.splits.split splits and subsets them, with its errors."""
    n_train, n_val = counts
    if cfg.val_split != "test":
        n_val = min(max(round(cfg.val_split * n_train), 1), n_train - 1)
        n_train -= n_val
    for k, n, path, what in ((cfg.train_subset, n_train, "dataset.train_subset", "train"),
                             (cfg.val_subset, n_val, "dataset.val_subset", "validation")):
        if k is not None and k > n:
            raise ConfigError(path, f"is {k} but the {what} split has only {n} examples")
    return cfg.train_subset or n_train
