"""End to end on real MNIST from ../shared/datasets (skipped cleanly where it is absent)."""
import pandas as pd
import pytest
from typer.testing import CliRunner

from lrsweep.cli import app

from conftest import SHARED_DATASETS

pytestmark = pytest.mark.skipif(not (SHARED_DATASETS / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
                                reason="real MNIST not found in ../shared/datasets")

CONFIG = """
name: mnist-e2e
dataset: {{name: mnist, root: {root}, download: false, train_subset: 4096, val_split: test, val_subset: 2000}}
model: {{name: cnn5}}
optimizer: {{name: sgd, momentum: 0.9}}
train: {{epochs: 1, eval_every: epoch, target_val_accuracy: 0.9, device: cpu, seed: 0, channels_last: true}}
sweep:
  batch_size: [32, 256]
  lr: [0.001, 0.01, 0.03]
"""


def test_mnist_sweep_from_the_cli(tmp_path):
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text(CONFIG.format(root=SHARED_DATASETS))
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    index = pd.read_csv(tmp_path / "runs" / "mnist-e2e" / "runs.csv")
    assert len(index) == 6 and set(index.status) == {"complete"}
    best = index.groupby("batch_size").final_val_acc.max()
    assert best[32] > 0.9, best  # 1 epoch of 4096 MNIST digits at B=32 reaches > 90%
    # too small an LR learns slowly: the smallest LR is worst at every batch size
    worst = index.loc[index.groupby("batch_size").final_val_acc.idxmin()]
    assert (worst.lr == 0.001).all()
    assert "best LR per batch size" in r.output
