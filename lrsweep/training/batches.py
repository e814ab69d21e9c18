"""The batch order: one sampler for every engine and the range test.

Batches are drawn by index from the dataset held as tensors on the device (document 001:
data loading, not compute, dominates epoch time once B is large). Each epoch draws a fresh
permutation with a generator seeded by train.seed (and keeps its first epoch_size indices: a
fresh random subset per epoch, if asked); drop_last, so every step sees exactly B examples.
"""
from __future__ import annotations

import torch

from lrsweep.training.setup import Budget


class BatchSampler:
    def __init__(self, seed: int, n_train: int, bud: Budget, batch_size: int, device: torch.device):
        self.generator = torch.Generator().manual_seed(seed)
        self.n_train, self.bud, self.B, self.device = n_train, bud, batch_size, device
        self.perm: torch.Tensor | None = None

    def indices(self, step: int) -> torch.Tensor:
        """The [B] example indices of step `step` (0-based); a new epoch starts a new permutation."""
        pos = step % self.bud.steps_per_epoch
        if pos == 0 or self.perm is None:
            perm = torch.randperm(self.n_train, generator=self.generator)[: self.bud.epoch_size]
            if self.device.type == "cuda":  # drawn on the host (the same order on every device), copied without a sync
                perm = perm.pin_memory().to(self.device, non_blocking=True)
            self.perm = perm.to(self.device)
        return self.perm[pos * self.B:(pos + 1) * self.B]

    def state_dict(self) -> torch.Tensor:
        """The generator's state at an epoch boundary (checkpoints are written only there)."""
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
        self.perm = None
