"""The user's own data: `dataset: {factory: "package.module:function", args: {...}}`, the
function called as function(**args) (its module looked for next to the sweep file first, as a
model factory's). It returns either

- tensors (or numpy arrays): a dict with `train_x`, `train_y`, `val_x`, `val_y` (val may be
  left out when val_split is a fraction) and optionally `num_classes`; or
- torch Datasets (map-style: len() and [i]) whose items are (x, y): a dict with `train` and
  `val` (val optional as above) or a pair (train, val). They are materialised once, item by
  item, into tensors; past dataset.max_gib that is refused before anything is allocated.

x: images [N, C, H, W] (uint8 pixels or floats), [N, H, W] (one channel), or features [N, D],
kept as [N, D, 1, 1] so that each feature is normalised on its own (an mlp flattens them
back); a Dataset's x is [C, H, W], [H, W], [D] or a PIL image. Floats are kept as float32,
uint8 as it is. y: integer labels 0..K-1; num_classes = K, the largest label + 1, unless the
dict says more. Train and val must agree in shape and dtype. Every problem is one line
naming dataset.factory.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lrsweep.config import DatasetConfig
from lrsweep.errors import ConfigError, quote

TENSOR_KEYS = ("train_x", "train_y", "val_x", "val_y", "num_classes")
DATASET_KEYS = ("train", "val")
EXPECTED = ("a dict of tensors (train_x, train_y, val_x, val_y) or of torch Datasets (train, val), "
            "or a pair of Datasets (train, val)")


def _call_text(cfg: DatasetConfig) -> str:
    return f"{cfg.factory}(" + ", ".join(f"{k}={quote(v)}" for k, v in cfg.args.items()) + ")"


def _fail(cfg: DatasetConfig, problem: str) -> ConfigError:
    return ConfigError("dataset.factory", f"{_call_text(cfg)} {problem}")


def check_importable(cfg: DatasetConfig) -> None:
    from lrsweep.models import load_factory

    load_factory(cfg.factory, cfg.factory_path, field="dataset.factory")


def load(cfg: DatasetConfig):
    """(train_x, train_y, val_x or None, val_y or None, num_classes), checked."""
    from lrsweep.models import load_factory

    fn = load_factory(cfg.factory, cfg.factory_path, field="dataset.factory")
    try:
        out = fn(**cfg.args)
    except Exception as e:  # noqa: BLE001 - the user's code: say which call failed
        raise _fail(cfg, f"raised {type(e).__name__}: {e}") from None
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(_is_dataset(d) for d in out):
        out = dict(zip(DATASET_KEYS, out))
    if not isinstance(out, dict):
        raise _fail(cfg, f"returned a {type(out).__name__}, expected {EXPECTED}")
    if "train" in out or "val" in out:
        parts, num_classes = _materialise(cfg, out), None
    else:
        unknown = [k for k in out if k not in TENSOR_KEYS]
        if unknown or "train_x" not in out or "train_y" not in out:
            what = f"unexpected key {quote(unknown[0])}" if unknown else "no train_x and train_y"
            raise _fail(cfg, f"returned a dict with {what}; expected {EXPECTED}")
        if ("val_x" in out) != ("val_y" in out):
            raise _fail(cfg, "returned val_x without val_y, or val_y without val_x")
        parts = [(_x(cfg, out["train_x"], "train_x"), _y(cfg, out["train_y"], "train_y"))]
        if "val_x" in out:
            parts.append((_x(cfg, out["val_x"], "val_x"), _y(cfg, out["val_y"], "val_y")))
        num_classes = out.get("num_classes")
    return _checked(cfg, parts, num_classes)


def _is_dataset(d) -> bool:
    """A map-style dataset: a torch Dataset, or anything with len() and [i] (a list of pairs)."""
    if isinstance(d, (torch.Tensor, np.ndarray, dict, str, bytes)):
        return False
    return isinstance(d, torch.utils.data.Dataset) or (hasattr(d, "__len__") and hasattr(d, "__getitem__"))


def _x(cfg, v, what: str, batched: bool = True) -> torch.Tensor:
    """x as a CPU tensor [N, C, H, W] (batched) or [C, H, W], uint8 or float32."""
    if _is_pil(v):
        v = np.asarray(v)
        v = v[..., None] if v.ndim == 2 else v
        v = v.transpose(2, 0, 1)  # H, W, C -> C, H, W
    if isinstance(v, np.ndarray):
        if v.dtype == object or not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
            raise _fail(cfg, f"gave {what} as a numpy array of {v.dtype}, expected numbers")
        v = _from_numpy(v)
    if not isinstance(v, torch.Tensor):
        raise _fail(cfg, f"gave {what} as a {type(v).__name__}, expected a tensor")
    if v.is_complex():
        raise _fail(cfg, f"gave {what} as {v.dtype}, expected real numbers")
    v = v.detach().cpu()
    v = v if v.dtype == torch.uint8 else v.float()
    lead = 1 if batched else 0
    if v.dim() == lead + 1:
        v = v.reshape(*v.shape, 1, 1)  # features: [.., D] -> [.., D, 1, 1]
    elif v.dim() == lead + 2:
        v = v.unsqueeze(lead)  # one channel: [.., H, W] -> [.., 1, H, W]
    elif v.dim() != lead + 3:
        shapes = "[N, C, H, W], [N, H, W] or [N, D]" if batched else "[C, H, W], [H, W] or [D]"
        raise _fail(cfg, f"gave {what} of shape {list(v.shape)}, expected {shapes}")
    return v.contiguous()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())  # a PIL image's array is read-only


def _is_pil(v) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(v, Image.Image)


def _y(cfg, v, what: str) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        v = _from_numpy(v) if v.dtype != object else v
    elif isinstance(v, (list, tuple)):
        try:
            v = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError):
            raise _fail(cfg, f"gave {what} that are not integer labels") from None
    if not isinstance(v, torch.Tensor) or v.dtype.is_floating_point or v.is_complex() or v.dtype == torch.bool:
        shown = v.dtype if isinstance(v, torch.Tensor) else type(v).__name__
        raise _fail(cfg, f"gave {what} as {str(shown).replace('torch.', '')}, expected integer class labels (0, 1, ...)")
    if v.dim() != 1:
        raise _fail(cfg, f"gave {what} of shape {list(v.shape)}, expected [N] labels")
    return v.detach().cpu().long()


def _example(cfg, ds, i: int, what: str):
    try:
        item = ds[i]
    except Exception as e:  # noqa: BLE001 - the user's Dataset
        raise _fail(cfg, f"{what}[{i}] raised {type(e).__name__}: {e}") from None
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise _fail(cfg, f"{what}[{i}] is a {type(item).__name__}, expected a pair (x, y)")
    x, y = item
    if isinstance(y, torch.Tensor) and y.numel() == 1 or isinstance(y, (np.ndarray, np.generic)) and y.size == 1:
        y = y.item()  # a 0-d or one-element tensor or array, a numpy integer
    if not isinstance(y, int) or isinstance(y, bool):
        raise _fail(cfg, f"{what}[{i}] has label {quote(y)}, expected an integer class label")
    return _x(cfg, x, f"{what}[{i}]'s x", batched=False), y


def _materialise(cfg, out: dict) -> list:
    unknown = [k for k in out if k not in DATASET_KEYS]
    if unknown or "train" not in out:
        what = f"unexpected key {quote(unknown[0])}" if unknown else "no train"
        raise _fail(cfg, f"returned a dict with {what}; expected {EXPECTED}")
    sets = [(k, out[k]) for k in DATASET_KEYS if k in out]
    for k, ds in sets:
        if not _is_dataset(ds) or isinstance(ds, torch.utils.data.IterableDataset):
            raise _fail(cfg, f"returned {k} as a {type(ds).__name__}, expected a map-style torch Dataset (len() and [i])")
    try:
        lengths = [len(ds) for _, ds in sets]
    except Exception as e:  # noqa: BLE001 - the user's Dataset
        raise _fail(cfg, f"returned a Dataset whose len() raised {type(e).__name__}: {e}") from None
    first = [_example(cfg, ds, 0, k) if n else None for (k, ds), n in zip(sets, lengths)]
    if first[0] is None:
        raise _fail(cfg, "returned an empty train Dataset")
    x0 = first[0][0]
    need = sum(lengths) * x0.numel() * x0.element_size()
    if need > cfg.max_gib * 2 ** 30:
        counts = " + ".join(str(n) for n in lengths)
        raise _fail(cfg, f"returned Datasets of {counts} examples of {_kind(x0)}: "
                         f"{need / 2 ** 30:.3g} GiB as tensors, more than dataset.max_gib ({cfg.max_gib:g}); "
                         "raise max_gib if that fits in memory")
    parts = []
    for (k, ds), n in zip(sets, lengths):
        xs = torch.empty((n, *x0.shape), dtype=x0.dtype)
        ys = torch.empty(n, dtype=torch.int64)
        for i in range(n):
            x, ys[i] = _example(cfg, ds, i, k)
            if x.shape != x0.shape or x.dtype != x0.dtype:
                raise _fail(cfg, f"{k}[{i}]'s x is {_kind(x)}, train[0]'s {_kind(x0)}")
            xs[i] = x
        parts.append((xs, ys))
    return parts


def _kind(x: torch.Tensor) -> str:
    """[3, 32, 32] uint8"""
    return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')}"


def _checked(cfg, parts: list, num_classes: Any):
    (tx, ty), (vx, vy) = parts[0], (parts[1] if len(parts) > 1 else (None, None))
    for (x, y), split in zip(parts, ("train", "val")):
        if len(x) != len(y):
            raise _fail(cfg, f"gave {len(x)} {split}_x but {len(y)} {split}_y")
        if len(y) == 0:
            raise _fail(cfg, f"gave no {split} examples")
        if x.dtype.is_floating_point and not torch.isfinite(x).all():
            raise _fail(cfg, f"gave {split}_x holding NaN or inf")
        if y.min() < 0:
            raise _fail(cfg, f"gave {split}_y holding label {int(y.min())}; labels are 0, 1, ...")
    if vx is not None and (vx.shape[1:] != tx.shape[1:] or vx.dtype != tx.dtype):
        raise _fail(cfg, f"gave val_x of {_kind(vx[0])} but train_x of {_kind(tx[0])}")
    top = max(int(y.max()) for y in (ty, vy) if y is not None)
    if num_classes is None:
        num_classes = top + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= top:
        raise _fail(cfg, f"gave num_classes {quote(num_classes)}, expected an integer above the largest label ({top})")
    if num_classes < 2:
        raise _fail(cfg, "gave labels of one class; a classifier needs at least 2")
    return tx, ty, vx, vy, int(num_classes)
