"""Write small fake datasets in their real on-disk formats (IDX files, the Tiny ImageNet tree, CIFAR, ImageFolder)."""
from __future__ import annotations

import pickle
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


class _Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the official CIFAR files (protocol 2): strings and
    bytes as 8-bit strings (BINSTRING), numpy's functions under `numpy.core`."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        op = pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256 else pickle.BINSTRING + struct.pack("<i", len(data))
        self.write(op + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_str8

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def write_cifar(root, kind="cifar10", per_file=6, seed=0):
    """CIFAR-10 (5 train batches + test_batch) or CIFAR-100 (train, test) files of `per_file`
    images each, in the official python-version format. Image i of a file is a solid
    COLORS[label % 5] square, exactly. Returns {'train': (uint8 [N,3,32,32], labels), 'test': ...}."""
    rng = np.random.default_rng(seed)
    folder, files, key, classes = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels", 100)}[kind]
    base = Path(root) / folder
    base.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], []), "test": ([], [])}
    for name in files:
        labels = rng.integers(0, classes, per_file).tolist()
        images = np.stack([np.broadcast_to(np.array(COLORS[y % 5], np.uint8)[:, None, None], (3, 32, 32)) for y in labels])
        d = {"batch_label": f"{name} of 1", "data": images.reshape(per_file, 3072).copy(), key: labels,
             "filenames": [f"img_{i}.png" for i in range(per_file)]}
        if kind == "cifar100":
            d["coarse_labels"] = [y // 5 for y in labels]
        with open(base / name, "wb") as f:
            _Python2Pickler(f, protocol=2).dump(d)
        split = "test" if "test" in name else "train"
        out[split][0].append(images)
        out[split][1].extend(labels)
    meta = ({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_file, "num_vis": 3072}
            if kind == "cifar10" else {"fine_label_names": [f"class{i}" for i in range(100)],
                                       "coarse_label_names": [f"super{i}" for i in range(20)]})
    with open(base / ("batches.meta" if kind == "cifar10" else "meta"), "wb") as f:
        _Python2Pickler(f, protocol=2).dump(meta)
    return {k: (np.concatenate(v[0]), np.array(v[1])) for k, v in out.items()}


def write_imagefolder(root, classes=("cat", "dog", "eel"), per_class=4, size=(12, 10), val=True):
    """An ImageFolder tree of PNGs: root/train/<class>/ and root/val/<class>/ (val=True), or
    root/<class>/ (val=False). Class i's images are solid COLORS[i]."""
    root = Path(root)
    for split in (("train", "val") if val else ("",)):
        for i, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_class if split != "val" else 2):
                Image.new("RGB", size, COLORS[i]).save(d / f"{c}_{j}.png")
    return root
