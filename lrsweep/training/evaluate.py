"""Evaluation of one model on a split: mean loss and accuracy, used by every engine."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def autocast(device: torch.device, precision: str):
    """bf16: forward passes under torch.autocast(bfloat16); fp32: nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, data, batch_size: int, channels_last: bool, precision: str = "fp32",
             split: str = "val") -> tuple[float, float]:
    """Mean loss and accuracy over a split, in batches (256 measured faster than 1000 on CPU)."""
    x_all, y_all = (data.val_x, data.val_y) if split == "val" else (data.train_x, data.train_y)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    device = next(model.parameters()).device
    try:
        for i in range(0, len(y_all), batch_size):
            x = data.normalize(x_all[i:i + batch_size])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[i:i + batch_size]
            with autocast(device, precision):
                out = model(x)
            out = out.float()  # cross_entropy on bf16 logits would round the sum
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    n = len(y_all)
    return loss_sum / n, correct / n
