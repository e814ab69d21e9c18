"""Datasets as whole tensors on the device: the trainer draws batches by index, no DataLoader.

Image datasets are stored as uint8 [N,C,H,W] (Tiny ImageNet as float32 would be ~5 GB) and
normalized per batch with `Data.normalize`; digits and synthetic are stored as float32.

Fixed seeds, so every run of a sweep sees the same data:
- digits has no test split: 'test' is a 20% hold-out drawn with torch seed HOLDOUT_SEED (0).
- synthetic: class means from seed 0, train samples from seed 1, val samples from seed 2;
  'test' is the n_val generated validation samples.
- val_split (a fraction), train_subset and val_subset are drawn with dataset.subset_seed
  (each with its own generator, so changing one does not change the others).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrsweep.config import DatasetConfig
from lrsweep.datasets_check import check_files, input_shape
from lrsweep.errors import ConfigError

HOLDOUT_SEED = 0
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_DIRS = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "Fashion-MNIST")}  # folder, label
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_DIR = "tiny-imagenet-200"


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


# --------------------------------------------------------------------------- public API

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 2


def load_data(cfg: DatasetConfig, device="cpu") -> Data:
    """Load (or reuse from the in-process cache) the dataset described by cfg, on device."""
    key = (_cache_key(cfg), str(device))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    check_available(cfg)
    check_files(cfg)  # a damaged file stops the sweep naming it (a ConfigError), never fails a run
    loader = {"mnist": _mnist, "fashion-mnist": _mnist, "tiny-imagenet": _tiny_imagenet,
              "digits": _digits, "synthetic": _synthetic}[cfg.name]
    train_x, train_y, val_x, val_y, num_classes = loader(cfg)
    data = _finish(cfg, train_x, train_y, val_x, val_y, num_classes).to(device)
    _CACHE[key] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def clear_cache() -> None:
    _CACHE.clear()


def check_available(cfg: DatasetConfig) -> None:
    """Raise ConfigError if the files are missing and download is off. Cheap: decodes nothing."""
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
        if not _tiny_present(root / TINY_DIR) and not cfg.download:
            raise ConfigError("dataset.root", f"no Tiny ImageNet under {root / TINY_DIR} (expected wnids.txt, "
                                              "train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt); "
                                              f"unzip {TINY_URL} into {root} or set dataset.download: true")


# --------------------------------------------------------------------------- loaders
# Each returns (train_x, train_y, val_x, val_y, num_classes), val = the 'test' split.


def _mnist(cfg):
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
        raise _download_failed(label, e, f"put {', '.join(MNIST_FILES)} in {root / folder / 'raw'}") from None
    check_files(cfg)  # what a download wrote
    return train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets, 10


def _digits(cfg):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)  # values 0..16
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    test, train = perm[: round(0.2 * len(y))].sort().values, perm[round(0.2 * len(y)):].sort().values
    return x[train], y[train], x[test], y[test], 10


def _synthetic(cfg):
    s = cfg.synthetic
    input_shape(cfg)  # checks it
    means = torch.randn(s.classes, *s.shape, generator=torch.Generator().manual_seed(0))

    def sample(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(s.classes, (n,), generator=g)
        return means[y] + s.noise * torch.randn(n, *s.shape, generator=g), y

    (tx, ty), (vx, vy) = sample(s.n_train, 1), sample(s.n_val, 2)
    return tx, ty, vx, vy, s.classes


def _tiny_present(base: Path) -> bool:
    return (base / "wnids.txt").is_file() and (base / "train").is_dir() and (base / "val" / "val_annotations.txt").is_file()


def _tiny_imagenet(cfg):
    root = Path(cfg.root).expanduser()
    base = root / TINY_DIR
    if not _tiny_present(base):  # download is on (check_available passed)
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(TINY_URL, download_root=str(root))
        except Exception as e:
            raise _download_failed("Tiny ImageNet", e, f"unzip {TINY_URL} into {root}") from None
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
    tx, ty = _cached_images(base / "lrsweep-cache-train.pt", train, base)
    vx, vy = _cached_images(base / "lrsweep-cache-val.pt", val, base)
    return tx, ty, vx, vy, len(wnids)


def _cached_images(cache: Path, items, base: Path, size=64):
    """Decode JPEGs once into uint8 [N,3,size,size]; reuse the cache file while the file list matches."""
    listing = "\n".join(f"{p.relative_to(base)}\t{y}" for p, y in items) + f"\n{size}"
    key = hashlib.sha1(listing.encode()).hexdigest()
    y = torch.tensor([y for _, y in items], dtype=torch.int64)
    if cache.is_file():
        try:
            c = torch.load(cache, weights_only=True)
            if c["key"] == key and c["x"].shape == (len(items), 3, size, size) and torch.equal(c["y"], y):
                return c["x"], y
        except Exception:
            pass  # stale or corrupt: rebuild
    x = np.empty((len(items), size, size, 3), np.uint8)

    def decode(i):
        try:
            with Image.open(items[i][0]) as im:
                im = im.convert("RGB")
                x[i] = np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR))
        except OSError as e:
            raise ConfigError("dataset.root", f"cannot read image {items[i][0]}: {e}") from None

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(len(items))))
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
    try:
        torch.save({"key": key, "x": x, "y": y}, tmp)
        os.replace(tmp, cache)
    except OSError:  # read-only data folder: work without the cache
        tmp.unlink(missing_ok=True)
    return x, y


# --------------------------------------------------------------------------- splits, subsets, stats


def _finish(cfg, train_x, train_y, val_x, val_y, num_classes) -> Data:
    if cfg.val_split != "test":
        n = len(train_y)
        n_val = min(max(round(cfg.val_split * n), 1), n - 1)
        perm = torch.randperm(n, generator=_gen(cfg.subset_seed, 0))
        val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
        val_x, val_y, train_x, train_y = train_x[val], train_y[val], train_x[train], train_y[train]
    train_x, train_y = _subset(train_x, train_y, cfg.train_subset, cfg.subset_seed, 1, "dataset.train_subset", "train")
    val_x, val_y = _subset(val_x, val_y, cfg.val_subset, cfg.subset_seed, 2, "dataset.val_subset", "validation")
    mean, std = _channel_stats(train_x)
    return Data(cfg.name, train_x, train_y.long(), val_x, val_y.long(), num_classes,
                tuple(train_x.shape[1:]), mean, std)


def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 3 + salt)  # one stream per purpose


def _subset(x, y, k, seed, salt, path, what):
    if k is None:
        return x, y
    if k > len(y):
        raise ConfigError(path, f"is {k} but the {what} split has only {len(y)} examples")
    idx = torch.randperm(len(y), generator=_gen(seed, salt))[:k].sort().values
    return x[idx], y[idx]


def _channel_stats(x: torch.Tensor, chunk=8192):
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


def _cache_key(cfg: DatasetConfig) -> str:
    d = cfg.model_dump(exclude={"epoch_subset", "download"})
    d["root"] = str(Path(cfg.root).expanduser().resolve())
    if cfg.name != "synthetic":
        d.pop("synthetic")
    return repr(sorted(d.items()))


def _download_failed(label, e, fix) -> ConfigError:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return ConfigError("dataset.download", f"downloading {label} failed ({reason}); {fix} instead")
