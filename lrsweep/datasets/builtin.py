"""The built-in datasets: MNIST, Fashion-MNIST, scikit-learn's digits, generated blobs, Tiny
ImageNet. Each loader returns (train_x, train_y, val_x, val_y, num_classes), val = the 'test' split.

Fixed seeds, so every run of a sweep sees the same data:
- digits has no test split: 'test' is a 20% hold-out drawn with torch seed HOLDOUT_SEED (0).
- synthetic: class means from seed 0, train samples from seed 1, val samples from seed 2;
  'test' is the n_val generated validation samples.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lrsweep.config import DatasetConfig
from lrsweep.datasets.images import cached_images
from lrsweep.datasets_check import check_files, input_shape
from lrsweep.errors import ConfigError

HOLDOUT_SEED = 0
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_DIRS = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "Fashion-MNIST")}  # folder, label
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_DIR = "tiny-imagenet-200"


def check_available(cfg: DatasetConfig) -> None:
    """ConfigError if MNIST's or Tiny ImageNet's files are missing and download is off."""
    root = Path(cfg.root).expanduser()
    if cfg.name in MNIST_DIRS:
        folder, label = MNIST_DIRS[cfg.name]
        raw = root / folder / "raw"
        missing = [f for f in MNIST_FILES if not (raw / f).is_file()]
        if missing and not cfg.download:
            what = f"no {label} files" if len(missing) == len(MNIST_FILES) else f"missing {', '.join(missing)}"
            raise ConfigError("dataset.root", f"{what} under {raw} (expected {', '.join(MNIST_FILES)}); "
                                              "put them there or set dataset.download: true")
    elif cfg.name == "tiny-imagenet":
        if not tiny_present(root / TINY_DIR) and not cfg.download:
            raise ConfigError("dataset.root", f"no Tiny ImageNet under {root / TINY_DIR} (expected wnids.txt, "
                                              "train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt); "
                                              f"unzip {TINY_URL} into {root} or set dataset.download: true")


def mnist(cfg):
    from torchvision import datasets as tvd
    cls = tvd.MNIST if cfg.name == "mnist" else tvd.FashionMNIST
    folder, label = MNIST_DIRS[cfg.name]
    root = Path(cfg.root).expanduser()
    try:
        train, test = (cls(str(root), train=t, download=cfg.download) for t in (True, False))
    except (RuntimeError, OSError, ValueError) as e:
        if not cfg.download:  # the files passed check_files: changed since, or unreadable
            raise ConfigError("dataset.root", f"cannot read the {label} files under {root / folder / 'raw'}: "
                                              f"{type(e).__name__}: {str(e)[:200]}") from None
        raise download_failed(label, e, f"put {', '.join(MNIST_FILES)} in {root / folder / 'raw'}") from None
    check_files(cfg)  # what a download wrote
    return train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets, 10


def digits(cfg):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)  # values 0..16
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    test, train = perm[: round(0.2 * len(y))].sort().values, perm[round(0.2 * len(y)):].sort().values
    return x[train], y[train], x[test], y[test], 10


def synthetic(cfg):
    s = cfg.synthetic
    input_shape(cfg)  # checks it
    means = torch.randn(s.classes, *s.shape, generator=torch.Generator().manual_seed(0))

    def sample(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(s.classes, (n,), generator=g)
        return means[y] + s.noise * torch.randn(n, *s.shape, generator=g), y

    (tx, ty), (vx, vy) = sample(s.n_train, 1), sample(s.n_val, 2)
    return tx, ty, vx, vy, s.classes


def tiny_present(base: Path) -> bool:
    return (base / "wnids.txt").is_file() and (base / "train").is_dir() and (base / "val" / "val_annotations.txt").is_file()


def tiny_imagenet(cfg):
    root = Path(cfg.root).expanduser()
    base = root / TINY_DIR
    if not tiny_present(base):  # download is on (check_available passed)
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(TINY_URL, download_root=str(root))
        except Exception as e:
            raise download_failed("Tiny ImageNet", e, f"unzip {TINY_URL} into {root}") from None
    wnids = (base / "wnids.txt").read_text().split()
    cls = {w: i for i, w in enumerate(wnids)}
    train = [(base / "train" / w / "images" / f, cls[w]) for w in wnids
             for f in sorted(os.listdir(base / "train" / w / "images")) if f.endswith(".JPEG")]
    val = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            if parts[1] not in cls:
                raise ConfigError("dataset.root", f"{base}/val/val_annotations.txt: unknown wnid {parts[1]!r}")
            val.append((base / "val" / "images" / parts[0], cls[parts[1]]))
    tx, ty = cached_images(base / "lrsweep-cache-train.pt", train, base)
    vx, vy = cached_images(base / "lrsweep-cache-val.pt", val, base)
    return tx, ty, vx, vy, len(wnids)


def download_failed(label, e, fix) -> ConfigError:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return ConfigError("dataset.download", f"downloading {label} failed ({reason}); {fix} instead")
