"""The models: an MLP, the cnn5 benchmark CNN, a small-input ResNet-18, torchvision's zoo by
name, and the user's own through a factory function."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Optional

import torch
from torch import nn

from lrsweep.config import ModelConfig
from lrsweep.errors import ConfigError

BUILTIN = ("mlp", "cnn5", "resnet18")


def load_factory(spec: str, search: Optional[str] = None, field: str = "model.factory") -> Callable:
    """The callable `package.module:function`, its module looked for in `search` (the sweep
    file's folder) first, then on the Python path. One-line ConfigErrors naming the factory."""
    module_name, _, attr = spec.partition(":")
    added = search is not None and search not in sys.path
    if added:
        sys.path.insert(0, search)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import-time error is the factory's
        where = f"{search} and the Python path" if search else "the Python path"
        raise ConfigError(field, f"{spec}: cannot import {module_name!r} (looked in {where}): "
                                 f"{type(e).__name__}: {e}") from None
    finally:
        if added:
            sys.path.remove(search)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(field, f"{spec}: module {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ConfigError(field, f"{spec}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def _from_factory(cfg: ModelConfig, input_shape, num_classes: int) -> nn.Module:
    fn = load_factory(cfg.factory, cfg.factory_path)
    call = f"{cfg.factory}(num_classes={num_classes}, input_shape={tuple(input_shape)}" + \
        "".join(f", {k}={v!r}" for k, v in cfg.args.items()) + ")"
    try:
        model = fn(num_classes=num_classes, input_shape=tuple(input_shape), **cfg.args)
    except Exception as e:  # noqa: BLE001 - the user's code: say which call failed
        raise ConfigError("model.factory", f"{call} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError("model.factory", f"{call} returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _torchvision(cfg: ModelConfig, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    args = dict(cfg.args)
    if args.get("weights") is not None:
        raise ConfigError("model.args.weights", "pretrained weights need a download and fix the classifier; "
                                                "lrsweep trains from scratch: leave weights out or null")
    args.pop("weights", None)
    if cfg.arch not in tvm.list_models():
        raise ConfigError("model.arch", f"unknown torchvision model {cfg.arch!r}; e.g. "
                                        f"{', '.join(sorted(tvm.list_models())[:8])}, ... (torchvision.models.list_models())")
    try:
        return tvm.get_model(cfg.arch, weights=None, num_classes=num_classes, **args)
    except Exception as e:  # noqa: BLE001 - bad args for that architecture
        raise ConfigError("model.args", f"torchvision {cfg.arch}(**{args}) raised {type(e).__name__}: {e}") from None


def check_forward(model: nn.Module, cfg: ModelConfig, input_shape, num_classes: int) -> None:
    """A user model must take [N, *input_shape] and give [N, num_classes]: checked on two zero
    examples before training, so a shape mismatch is a one-line error, not a failed run."""
    p = next(model.parameters(), None)
    x = torch.zeros(2, *input_shape, device=p.device if p is not None else "cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001
        raise ConfigError("model", f"{cfg.label} cannot take inputs of shape [N, {', '.join(map(str, input_shape))}]: "
                                   f"{type(e).__name__}: {str(e)[:200]}") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError("model", f"{cfg.label} gives {shape} for 2 examples, expected (2, {num_classes}) logits")


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if cfg.factory is not None:
        return _from_factory(cfg, input_shape, num_classes)
    if cfg.name == "torchvision":
        return _torchvision(cfg, num_classes)
    c, h, w = input_shape
    if cfg.name == "mlp":
        layers, width = [nn.Flatten()], c * h * w
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        return nn.Sequential(*layers, nn.Linear(width, num_classes))
    if cfg.name == "cnn5":
        # The benchmark model: keep exactly conv32-conv64-conv64 (3x3, pad 1, ReLU, maxpool 2) + fc128 + fc.
        if h < 8 or w < 8:
            raise ConfigError("model.name", f"cnn5 needs inputs of at least 8x8 (three 2x2 poolings), got {h}x{w}")
        block = lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(
            *block(c, 32), *block(32, 64), *block(64, 64), nn.Flatten(),
            nn.Linear(64 * (h // 2 // 2 // 2) * (w // 2 // 2 // 2), 128), nn.ReLU(), nn.Linear(128, num_classes))
    if cfg.name == "resnet18":
        from torchvision.models import resnet18
        m = resnet18(weights=None, num_classes=num_classes)
        m.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)  # small inputs: no downsampling stem
        m.maxpool = nn.Identity()
        return m
    raise ConfigError("model.name", f"unknown model {cfg.name!r}")


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Approximate forward FLOPs per example: 2 x the MACs of the conv and linear layers."""
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    p = next(model.parameters())
    was_training = model.training
    try:
        model.eval()  # batch norm cannot run in train mode on one example with 1x1 maps
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return 2 * macs
