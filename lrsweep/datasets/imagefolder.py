"""A folder of images in torchvision's ImageFolder layout (`name: imagefolder`, `root: DIR`):

    DIR/train/<class>/...  and  DIR/val/<class>/...   val_split: test (the default) = val/
    DIR/<class>/...                                  val_split: a fraction held out of them all

Classes are the sorted names of the class folders (of train/, in the first layout): a class's
label is its position. val/ may lack a class, not have one train/ does not. Images are the files
with torchvision's extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) in a class
folder and below; other files, and files and folders starting with '.', are skipped.

Decoded once (images.py) to uint8 [N,3,S,S], S = dataset.image_size (64 by default), into
DIR/lrsweep-cache-{train,val,all}-S.pt; refused if that would exceed dataset.max_gib.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lrsweep.config import DatasetConfig
from lrsweep.datasets.images import cached_images, is_image
from lrsweep.errors import ConfigError

LAYOUT = "DIR/train/<class>/*.png and DIR/val/<class>/*.png, or DIR/<class>/*.png with val_split a fraction"


def folders(cfg: DatasetConfig) -> tuple[Path, Path, Optional[Path]]:
    """(root, the folder of the training classes, the folder of the validation classes or None),
    checked for what is there without listing the images."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ConfigError("dataset.root", f"{root}: no such folder (an image folder is {LAYOUT})")
    if (root / "train").is_dir():
        val = root / "val"
        if cfg.val_split == "test" and not val.is_dir():
            raise ConfigError("dataset.root", f"{root} has train/ but no val/: add val/<class>/ folders "
                                              "or hold out a fraction (val_split: 0.1)")
        return root, root / "train", (val if cfg.val_split == "test" else None)
    if cfg.val_split == "test":
        raise ConfigError("dataset.root", f"{root} has no train/ and val/ folders: hold out a fraction of its "
                                          f"class folders (val_split: 0.1), or lay it out as {LAYOUT}")
    return root, root, None


def check_available(cfg: DatasetConfig) -> None:
    folders(cfg)


def _classes(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise ConfigError("dataset.root", f"cannot list {folder}: {e.strerror or e}") from None


def _images(folder: Path) -> list[Path]:
    found = []
    for here, dirs, files in os.walk(folder, followlinks=True, onerror=_unlistable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(here) / f for f in sorted(files) if is_image(f) and not f.startswith(".")]  # ._x.jpg: macOS metadata
    return found


def _unlistable(e: OSError):
    raise ConfigError("dataset.root", f"cannot list {e.filename}: {e.strerror or e}")


def scan(cfg: DatasetConfig):
    """(root, train folder, classes, train items, val items or None); items are (path, label)."""
    root, train_dir, val_dir = folders(cfg)
    classes = _classes(train_dir)
    if len(classes) < 2:
        raise ConfigError("dataset.root", f"{train_dir}: {len(classes)} class folder{'s' * (len(classes) != 1)} "
                                          f"({', '.join(classes) or 'none'}); an image folder is {LAYOUT}")
    label = {c: i for i, c in enumerate(classes)}
    train = []
    for c in classes:
        found = _images(train_dir / c)
        if not found:
            raise ConfigError("dataset.root", f"{train_dir / c}: no images (files ending in .jpg, .jpeg, .png, ...)")
        train += [(p, label[c]) for p in found]
    val = None
    if val_dir is not None:
        unknown = [c for c in _classes(val_dir) if c not in label]
        if unknown:
            raise ConfigError("dataset.root", f"{val_dir / unknown[0]}: a class train/ does not have "
                                              f"(its classes: {', '.join(classes[:8])}{', ...' * (len(classes) > 8)})")
        val = [(p, label[c]) for c in classes if (val_dir / c).is_dir() for p in _images(val_dir / c)]
        if not val:
            raise ConfigError("dataset.root", f"{val_dir}: no images in its class folders")
    return root, train_dir, classes, train, val


def load(cfg: DatasetConfig):
    root, train_dir, classes, train, val = scan(cfg)
    s = cfg.image_size
    n = len(train) + len(val or ())
    gib = n * 3 * s * s / 2 ** 30
    if gib > cfg.max_gib:
        raise ConfigError("dataset.max_gib", f"{root}: {n} images at {s}x{s} are {gib:.3g} GiB decoded, more than "
                                             f"max_gib ({cfg.max_gib:g}): lower image_size, or raise dataset.max_gib")
    tag = "all" if train_dir == root else "train"
    tx, ty = cached_images(root / f"lrsweep-cache-{tag}-{s}.pt", train, root, s)
    vx = vy = None
    if val is not None:
        vx, vy = cached_images(root / f"lrsweep-cache-val-{s}.pt", val, root, s)
    return tx, ty, vx, vy, len(classes)
