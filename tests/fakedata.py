"""Write small fake datasets in their real on-disk formats (IDX files, the Tiny ImageNet tree)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(root, folder="FashionMNIST", n_train=20, n_test=8, seed=0):
    """Uncompressed IDX files under root/folder/raw with torchvision's names.
    Returns {'train': (images uint8 [N,28,28], labels [N]), 'test': (...)}."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
        out[split] = (images, labels)
    return out


# One solid colour per class, far apart, so JPEG artefacts cannot blur the labels.
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def write_tiny_imagenet(root, n_classes=3, per_class=4, n_val=6, size=64):
    """A Tiny ImageNet tree: root/tiny-imagenet-200/{wnids.txt, train/<wnid>/images, val/...}.
    Image of class i is a solid COLORS[i] square. Returns (wnids, val labels)."""
    base = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(n_classes)]
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for i, w in enumerate(wnids):
        d = base / "train" / w / "images"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.new("RGB", (size, size), COLORS[i]).save(d / f"{w}_{j}.JPEG")
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines, val_labels = [], []
    for j in range(n_val):
        c = (j * 2 + 1) % n_classes
        Image.new("RGB", (size, size), COLORS[c]).save(base / "val" / "images" / f"val_{j}.JPEG")
        lines.append(f"val_{j}.JPEG\t{wnids[c]}\t0\t0\t{size - 1}\t{size - 1}")
        val_labels.append(c)
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids, val_labels
