"""The batch order: one sampler for every engine and the range test.

Batches are drawn by index from the dataset held as tensors on the device (document 001:
data loading, not compute, dominates epoch time once B is large). The sampler is a stream:
each step takes the next B indices of a permutation drawn with a generator seeded by
train.seed (its first epoch_size indices: a fresh random subset per epoch, if asked), and a
new permutation starts when fewer than B are left (drop_last, so every step sees exactly B
examples). At a constant B that is a new permutation every steps_per_epoch steps; with
train.batch_schedule the engine passes each step's B and a pass holds fewer, larger steps.
"""
from __future__ import annotations

from typing import Optional

import torch

from lrsweep.training.setup import Budget


class BatchSampler:
    def __init__(self, seed: int, n_train: int, bud: Budget, batch_size: int, device: torch.device):
        self.generator = torch.Generator().manual_seed(seed)
        self.n_train, self.bud, self.B, self.device = n_train, bud, batch_size, device
        self.left: Optional[torch.Tensor] = None  # the current permutation's indices not yet drawn
        self.next_step: Optional[int] = 0  # None: unknown (restored from a checkpoint that lacks it)

    def indices(self, step: int, batch_size: Optional[int] = None) -> torch.Tensor:
        """The example indices of step `step` (0-based; steps come in order: a stream has no
        random access): `batch_size` of them (default: the sampler's B)."""
        if self.next_step is not None and step != self.next_step:
            raise RuntimeError(f"internal: batch of step {step} asked for, the next one is {self.next_step}")
        B = self.B if batch_size is None else batch_size
        if self.left is None or len(self.left) < B:
            perm = torch.randperm(self.n_train, generator=self.generator)[: self.bud.epoch_size]
            if self.device.type == "cuda":  # drawn on the host (the same order on every device), copied without a sync
                perm = perm.pin_memory().to(self.device, non_blocking=True)
            self.left = perm.to(self.device)
        idx, self.left = self.left[:B], self.left[B:]
        self.next_step = step + 1
        return idx

    def state_dict(self) -> dict:
        """The generator's state and the current permutation's undrawn indices (checkpoints are
        written at epoch ends, which with a batch schedule may fall inside a permutation)."""
        left = None if self.left is None else self.left.cpu().clone()
        return {"generator": self.generator.get_state(), "left": left, "next_step": self.next_step}

    def load_state_dict(self, state) -> None:
        if isinstance(state, torch.Tensor):  # older checkpoints: the generator alone, at a permutation's end
            self.generator.set_state(state)
            self.left, self.next_step = None, None
            return
        self.generator.set_state(state["generator"])
        self.left = None if state["left"] is None else state["left"].to(self.device)
        self.next_step = state["next_step"]
