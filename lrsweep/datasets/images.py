"""Image files decoded once into uint8 [N,3,S,S] tensors, cached in a file next to them
(Tiny ImageNet, image folders).

Each image is converted to RGB, its shorter side resized to S (Pillow's antialiased bilinear)
and the centre S x S cropped: a square image is only resized, and one already S x S is kept as
it is. The cache file holds the SHA-1 of the file list (paths relative to the data folder,
labels) and S; it is reused while they match, rebuilt when they do not, and skipped on a
read-only folder (the images are then decoded every time).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrsweep.errors import ConfigError

# torchvision's ImageFolder extensions (matched case-insensitively)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 [size, size, 3] (ConfigError naming the file if it cannot be read)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at the smallest scale >= size (fast)
            im = im.convert("RGB")
            w, h = im.size
            if (w, h) != (size, size):
                scale = size / min(w, h)
                rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
                im = im.resize((rw, rh), Image.BILINEAR)
                left, top = (rw - size) // 2, (rh - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ConfigError("dataset.root", f"cannot read image {path}: {e}") from None


def cached_images(cache: Path, items: list[tuple[Path, int]], base: Path, size: int = 64):
    """(x uint8 [N,3,size,size], y int64 [N]) of `items` (path, label); reuses `cache` while
    the file list and size match."""
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

    def one(i):
        x[i] = decode(items[i][0], size)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(items))))
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    _save(cache, {"key": key, "x": x, "y": y})
    return x, y


def _save(cache: Path, obj: dict) -> None:
    """Write the cache atomically; a read-only or full folder: work without it."""
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # opened here: torch.save on a path raises RuntimeError, not OSError
            torch.save(obj, f)
        os.replace(tmp, cache)
    except (OSError, RuntimeError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
