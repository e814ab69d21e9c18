"""Variant `plain`: the grid as users train it without lrsweep, one run after another, as in
pytorch/examples' MNIST: a torchvision dataset with ToTensor/Normalize transforms, a
DataLoader(shuffle=True), torch.optim.SGD, test batches of 1000. The baseline every speed-up
is measured against; it shares lrsweep's init (same layers, same seed) but not its data order.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lrsweep.benchmark.grid import BenchGrid, subset_indices
from lrsweep.results import RunStatus


class Net(nn.Module):
    """cnn5 written the usual way (same layers in the same order: the same init for a seed)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 3 * 3, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def plain_sweep(root: Path, grid: BenchGrid, device: torch.device) -> list[dict]:
    """One cell dict per grid cell: batch_size, lr, val_acc, steps, status, evaluated."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    idx = subset_indices(len(train_set), grid.train_subset, 0, 1)
    train_set = Subset(train_set, idx.tolist())
    if grid.test_subset is not None:
        test_set = Subset(test_set, subset_indices(len(test_set), grid.test_subset, 0, 2).tolist())
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    results = []
    for batch_size, lr in grid.cells:
        torch.manual_seed(grid.seed)
        model = Net().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=grid.momentum)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, **kwargs)
        test_loader = DataLoader(test_set, batch_size=1000, **kwargs)
        steps = 0
        for _ in range(grid.epochs):
            model.train()
            for data, target in train_loader:
                data, target = data.to(device), target.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(data), target)
                loss.backward()
                optimizer.step()
                steps += 1
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                correct += (model(data).argmax(1) == target).sum().item()
        acc = correct / len(test_set)
        results.append({"batch_size": batch_size, "lr": lr, "val_acc": acc, "steps": steps,
                        "status": RunStatus.COMPLETE.value if math.isfinite(loss.item()) else "nan",
                        "evaluated": True})
    return results
