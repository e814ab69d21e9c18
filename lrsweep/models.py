"""The models: an MLP, the cnn5 benchmark CNN, and a small-input ResNet-18."""
from __future__ import annotations

import torch
from torch import nn

from lrsweep.config import ModelConfig
from lrsweep.errors import ConfigError


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
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
