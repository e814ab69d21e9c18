"""Grid expansion: generators, zip groups, overrides, run ids."""
import numpy as np
import pytest

from lrsweep.errors import ConfigError
from lrsweep.config.grid import axis_values, build_sweep

from conftest import make_config


def test_logspace_is_geomspace_in_value_space():
    v = axis_values("lr", {"logspace": [1e-3, 1.0, 4]})
    assert v == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert axis_values("lr", {"logspace": [1e-3, 1.0, 8]}) == pytest.approx(list(np.geomspace(1e-3, 1, 8)))


def test_linspace_and_inclusive_range():
    assert axis_values("x", {"linspace": [0.0, 1.0, 5]}) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert axis_values("batch_size", {"range": [1, 12, 1]}) == list(range(1, 13))
    assert axis_values("batch_size", {"range": [64, 1164, 100]}) == list(range(64, 1165, 100))
    lrs = axis_values("lr", {"range": [1e-4, 1e-3, 1e-4]})
    assert len(lrs) == 10 and lrs[-1] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="towards stop"):
        axis_values("x", {"range": [5, 1, 1]})


def test_batch_sizes_from_logspace_are_integers():
    v = axis_values("batch_size", {"logspace": [32, 512, 5]})
    assert v == [32, 64, 128, 256, 512] and all(type(x) is int for x in v)


def test_cartesian_product_with_zip_and_seeds():
    raw = make_config(sweep={"zip": {"batch_size": [1, 2, 4], "lr": [0.05, 0.1, 0.2]}, "seed": [0, 1]})
    sweep = build_sweep(raw)
    assert len(sweep.runs) == 6
    pairs = {(r.config.train.batch_size, r.config.optimizer.lr) for r in sweep.runs}
    assert pairs == {(1, 0.05), (2, 0.1), (4, 0.2)}
    assert {r.config.train.seed for r in sweep.runs} == {0, 1}


def test_any_field_is_an_axis_by_dotted_name():
    sweep = build_sweep(make_config(sweep={"optimizer.name": ["sgd", "adam"], "schedule.name": ["constant", "cosine"],
                                           "lr": [0.1]}))
    assert len(sweep.runs) == 4
    assert {(r.config.optimizer.name, r.config.schedule.name) for r in sweep.runs} == {
        ("sgd", "constant"), ("sgd", "cosine"), ("adam", "constant"), ("adam", "cosine")}


def test_run_ids_stable_unique_and_ignore_device():
    a = build_sweep(make_config())
    b = build_sweep(make_config(**{"train.device": "auto"}))
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert len({r.run_id for r in a.runs}) == len(a.runs) == 4
    c = build_sweep(make_config(**{"optimizer.momentum": 0.5}))
    assert not {r.run_id for r in a.runs} & {r.run_id for r in c.runs}


def test_duplicate_values_run_once_and_axis_given_twice():
    assert len(build_sweep(make_config(sweep={"lr": [0.1, 0.1, 0.2]})).runs) == 2
    with pytest.raises(ConfigError, match="axis given twice"):
        build_sweep(make_config(sweep={"lr": [0.1], "optimizer.lr": [0.2]}))


def test_overrides_change_the_grid():
    sweep = build_sweep(make_config(), ["sweep.lr={logspace: [0.01, 1, 3]}", "optimizer.momentum=0.5"])
    assert len(sweep.runs) == 6
    assert all(r.config.optimizer.momentum == 0.5 for r in sweep.runs)


def test_zip_partners_are_validated_together():
    # a negative gamma is valid only for a sigmoid schedule: legal when zipped with it
    raw = make_config(sweep={"zip": {"schedule.name": ["step", "sigmoid"], "schedule.gamma": [0.5, -0.1]}})
    assert len(build_sweep(raw).runs) == 2
    raw = make_config(sweep={"zip": {"schedule.name": ["step", "cosine"], "schedule.gamma": [0.5, -0.1]}})
    with pytest.raises(ConfigError, match="gamma"):
        build_sweep(raw)
