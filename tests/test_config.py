"""Config validation: every bad input is a one-line ConfigError naming the YAML path and value."""
import pytest

from lrsweep.config import apply_overrides, load_yaml
from lrsweep.errors import ConfigError
from lrsweep.config.grid import build_sweep, load_sweep

from conftest import make_config

ISSUE_EXAMPLE = """
name: mnist-sgd
dataset: {name: mnist, root: data, download: true, train_subset: 8192, val_split: test}
model: {name: cnn5}
optimizer: {name: sgd, momentum: 0.9, weight_decay: 0.0}
schedule: {name: constant, warmup_steps: 0}
lr_scaling: {rule: none, base_batch_size: 256}
train: {epochs: 1, eval_every: epoch, target_train_loss: 0.3, target_val_accuracy: 0.98,
        device: auto, seed: 0}
sweep:
  batch_size: [32, 128, 512]
  lr: {logspace: [1.0e-3, 1.0, 8]}
  seed: [0]
"""


def test_issue_example_parses(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(ISSUE_EXAMPLE)
    sweep = load_sweep(p)
    assert len(sweep.runs) == 24
    cfg = sweep.runs[0].config
    assert cfg.dataset.train_subset == 8192 and cfg.train.target_val_accuracy == 0.98
    assert sorted({r.axes["batch_size"] for r in sweep.runs}) == [32, 128, 512]
    lrs = sorted({r.config.optimizer.lr for r in sweep.runs})
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1.0) and len(lrs) == 8


@pytest.mark.parametrize("change, path, fragment", [
    ({"optimizer.lrr": 0.1}, "optimizer.lrr", "did you mean 'lr'"),
    ({"trian": {}}, "trian", "did you mean 'train'"),
    ({"optimizer.momentum": "high"}, "optimizer.momentum", "'high'"),
    ({"optimizer.lr": -0.1}, "optimizer.lr", "-0.1"),
    ({"train.batch_size": 0}, "train.batch_size", "0"),
    ({"sweep.batch_size": [16, 0]}, "sweep.batch_size", "0"),
    ({"sweep.lr": [0.1, -2.5]}, "sweep.lr", "-2.5"),
    ({"sweep.lr": []}, "sweep.lr", "empty axis"),
    ({"train.steps": 0}, "train.steps", "> 0"),
    ({"train.steps": None, "train.epochs": 0}, "train.epochs", "> 0"),
    ({"train.epochs": 2}, "train", "one budget"),
    ({"optimizer.name": "sgdd"}, "optimizer.name", "expected one of (sgd, adam"),
    ({"schedule.name": "cosin"}, "schedule.name", "expected one of"),
    ({"lr_scaling.rule": "quadratic"}, "lr_scaling.rule", "expected one of (none, linear, sqrt)"),
    ({"train.device": "gpu"}, "train.device", "cuda:N"),
    ({"sweep.lr": {"logspace": [0, 1, 3]}}, "sweep.lr.logspace", "> 0"),
    ({"sweep.lr": {"geomspace": [0.1, 1, 3]}}, "sweep.lr", "logspace"),
    ({"sweep.zip": {"batch_size": [1, 2], "lr": [0.1]}}, "sweep.zip", "equal lengths"),
    ({"sweep": {"optimizer.nam": ["sgd"]}}, "sweep.optimizer.nam", "did you mean 'name'"),
    ({"optimizer.nesterov": True, "optimizer.momentum": 0}, "optimizer", "nesterov"),
])
def test_bad_input_names_path_and_value(change, path, fragment):
    with pytest.raises(ConfigError) as e:
        build_sweep(make_config(**change))
    msg = str(e.value)
    assert msg.startswith(path + ":"), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndataset: {name: digits\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_yaml(p)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(p)


def test_safe_loader_rejects_python_tags(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(p)


def test_overrides_set_fields_and_axes():
    raw = apply_overrides(make_config(), ["lr=0.5", "train.steps=7", "sweep.batch_size=[8]",
                                          "optimizer.betas=[0, 0]", "seed=3"])
    assert raw["optimizer"]["lr"] == 0.5 and raw["train"]["steps"] == 7 and raw["train"]["seed"] == 3
    assert raw["sweep"]["batch_size"] == [8]
    with pytest.raises(ConfigError, match="--set: expected key=value"):
        apply_overrides(make_config(), ["lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides(make_config(), ["optimizer.momentum.x=1"])


def test_lr_scaling_effective_lr():
    for rule, factor in (("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)):
        sweep = build_sweep(make_config(**{"lr_scaling": {"rule": rule, "base_batch_size": 8},
                                           "sweep": {"batch_size": [32]}, "optimizer.lr": 0.1}))
        cfg = sweep.runs[0].config
        assert cfg.optimizer.lr == 0.1
        assert cfg.effective_lr == pytest.approx(0.1 * factor)
