"""train.noise_scale: B_simple = tr(Sigma) / |G|^2 while training (training/noise_scale.py).
The estimators are unbiased on synthetic gradients with a known G and Sigma (where the squared
norm of a batch gradient is not), and less noisy than the paper's two-norm form; through the
engine, a linear softmax model that barely moves gives the |G|^2 and tr(Sigma) computed exactly
from its per-example gradients over the training set; both engines log the same columns; the
measurement leaves the training update (BatchNorm, dropout included) as it was; it survives a
resume; bad settings are one-line errors."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import lrsweep.training.setup as setup_mod
from lrsweep import sweep as sweep_mod
from lrsweep.cli import app
from lrsweep.config import parse_run_config
from lrsweep.config.grid import build_sweep
from lrsweep.datasets import load_data
from lrsweep.result_check import validate_result
from lrsweep.training.checkpoint import CHECKPOINT
from lrsweep.training.noise_scale import NOISE_COLUMNS, estimates
from lrsweep.training.sequential import train
from lrsweep.training.setup import init_model
from lrsweep.training.vectorized import train_group

from conftest import apply_changes, make_config

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
runner = CliRunner()
BASE = {
    "name": "noise",
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 256, "n_val": 32, "classes": 4, "shape": [1, 4, 4]}},
    "model": {"name": "mlp", "hidden": [16]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"steps": 24, "batch_size": 32, "eval_every": 12, "device": "cpu", "noise_scale": {"every": 3}},
}


def cfg(**changes):
    return parse_run_config(apply_changes(copy.deepcopy(BASE), changes))


# --------------------------------------------------------------------------- the estimators


def _synthetic_batches(trials=4000, B=32, d=40, seed=0):
    """Per-example gradients g_i = G + noise with a known, anisotropic covariance Sigma."""
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(d, generator=gen, dtype=torch.float64) * 0.12
    scale = torch.linspace(0.2, 1.5, d, dtype=torch.float64)  # Sigma = diag(scale^2)
    g = G + torch.randn(trials, B, d, generator=gen, dtype=torch.float64) * scale
    return g, float(G @ G), float((scale ** 2).sum())


def test_the_estimates_are_unbiased_where_the_squared_batch_norm_is_not():
    B, b = 32, 16
    g, g2, trace = _synthetic_batches(B=B)
    assert trace / g2 > B  # noise-dominated: |G_B|^2 overstates |G|^2 by (1 + B_simple / B) > 2x
    small, full = g[:, :b].mean(1), g.mean(1)  # [trials, d]: one "member" per trial
    # two "parameters" (a split of the vector) in float32, as an engine's gradients are
    parts = lambda t: [t[:, :15].float(), t[:, 15:].float()]  # noqa: E731
    est_g2, est_trace = estimates(parts(small), parts(full), b, B, stacked=True)
    assert est_g2.shape == (len(g),) and est_g2.dtype == torch.float64
    se_g2 = float(est_g2.std()) / math.sqrt(len(g))
    assert float(est_g2.mean()) == pytest.approx(g2, abs=4 * se_g2)
    assert float(est_trace.mean()) == pytest.approx(trace, rel=0.02)
    biased = float((full ** 2).sum(1).mean())  # |G_B|^2 taken as |G|^2
    assert abs(biased - g2) > 20 * se_g2 and biased == pytest.approx(g2 + trace / B, rel=0.03)
    # one unstacked measurement gives the stacked one's first member
    one = estimates([small[0, :15], small[0, 15:]], [full[0, :15], full[0, 15:]], b, B)
    assert float(one[0]) == pytest.approx(float(est_g2[0]), rel=1e-5)
    assert float(one[1]) == pytest.approx(float(est_trace[0]), rel=1e-5)


def test_the_split_form_is_less_noisy_than_the_papers_two_norm_form():
    B, b = 32, 16
    g, g2, trace = _synthetic_batches(B=B, seed=1)
    small, full = g[:, :b].mean(1), g.mean(1)
    est_g2, est_trace = estimates([small], [full], b, B, stacked=True)
    ns, nb = (small ** 2).sum(1), (full ** 2).sum(1)
    paper_g2 = (B * nb - b * ns) / (B - b)
    paper_trace = (ns - nb) / (1 / b - 1 / B)
    assert float(paper_g2.mean()) == pytest.approx(g2, abs=4 * float(paper_g2.std()) / math.sqrt(len(g)))
    assert float(paper_trace.mean()) == pytest.approx(trace, rel=0.03)
    assert float(est_g2.var()) < 0.7 * float(paper_g2.var())  # theory at G = 0: 1/2
    assert float(est_trace.var()) < 0.5 * float(paper_trace.var())  # theory at G = 0: 1/3


def test_a_sub_batch_must_leave_a_rest():
    with pytest.raises(ValueError, match="0 < small batch < batch"):
        estimates([torch.ones(3)], [torch.ones(3)], 4, 4)


# --------------------------------------------------------------------------- through the engine


def _exact_at_init(c, data):
    """|G|^2 and tr(Sigma) of the initial linear softmax model, from its per-example gradients
    over the training set in closed form (logits z = W x + c: dL/dW = (softmax(z) - onehot(y)) x^T,
    dL/dc = softmax(z) - onehot(y)), as expected from batches drawn without replacement
    (noise_scale.py's caveat): tr(S), S the covariance with 1/(N - 1), and |G|^2 - tr(S)/N."""
    (linear,) = [m for m in init_model(c, data, CPU).modules() if isinstance(m, torch.nn.Linear)]
    x = data.normalize(data.train_x).flatten(1).double()
    W, bias = linear.weight.detach().double(), linear.bias.detach().double()
    err = torch.softmax(x @ W.T + bias, 1) - F.one_hot(data.train_y, W.shape[0]).double()
    flat = torch.cat([(err[:, :, None] * x[:, None, :]).flatten(1), err], 1)  # [N, parameters]
    n = len(flat)
    G = flat.mean(0)
    trace = float(((flat - G) ** 2).sum() / (n - 1))
    return float(G @ G) - trace / n, trace


def test_a_linear_model_that_barely_moves_gives_the_exact_noise_scale():
    # a linear softmax model, LR 1e-12: every step measures the initial model; ema 0 logs the
    # raw estimates, so the columns' means estimate the exact values (standard error ~1.5%)
    c = cfg(**{"model.hidden": [], "optimizer.lr": 1e-12, "optimizer.momentum": 0.0, "train.steps": 300,
               "train.eval_every": 300, "dataset.synthetic.noise": 2.0,
               "train.noise_scale": {"every": 1, "ema": 0.0}})
    data = load_data(c.dataset, CPU)
    g2, trace = _exact_at_init(c, data)
    out = train(c, data, CPU)
    m = pd.DataFrame(out.metrics)
    assert m.noise_g2.mean() == pytest.approx(g2, rel=0.06)
    assert m.noise_trace.mean() == pytest.approx(trace, rel=0.06)
    assert (m.grad_norm ** 2).mean() > 1.3 * g2  # what a squared batch norm would have said
    assert m.b_simple.iloc[0] == pytest.approx(m.noise_trace.iloc[0] / m.noise_g2.iloc[0])
    s = out.summary["noise_scale"]
    assert (s["measurements"], s["small_batch"], s["every"], s["first_step"], s["last_step"]) == (300, 16, 1, 1, 300)
    assert s["first_b_simple"] == pytest.approx(m.b_simple.iloc[0])
    assert s["last_b_simple"] == pytest.approx(m.b_simple.iloc[-1])


def test_the_columns_hold_the_latest_smoothed_estimate_on_every_logged_row():
    c = cfg(**{"train.log_every": 2, "train.noise_scale": {"every": 5, "small_batch": 8, "ema": 0.5}})
    out = train(c, load_data(c.dataset, CPU), CPU)
    m = pd.DataFrame(out.metrics)
    assert list(m.columns[-3:]) == list(NOISE_COLUMNS) and list(m.step) == list(range(2, 25, 2))
    assert m[list(NOISE_COLUMNS)].notna().all().all()
    # measured at steps 1, 6, 11, 16, 21: a new value on the first row after each
    changes = list(m.step[m.b_simple.diff() != 0])
    assert changes == [2, 6, 12, 16, 22]
    assert (m.b_simple == m.noise_trace / m.noise_g2).all()
    # the values: bias-corrected EMAs of the raw measurements (ema 0 logs those)
    raw = pd.DataFrame(train(cfg(**{"train.noise_scale": {"every": 5, "small_batch": 8, "ema": 0.0}}),
                             load_data(c.dataset, CPU), CPU).metrics).set_index("step")
    avg = num = 0.0
    for n, (step, logged) in enumerate(zip((1, 6, 11, 16, 21), changes), 1):
        avg, num = 0.5 * avg + 0.5 * raw.noise_g2[step], 0.5 * num + 0.5 * raw.noise_trace[step]
        row = m[m.step == logged].iloc[0]
        assert (row.noise_g2, row.noise_trace) == pytest.approx((avg / (1 - 0.5 ** n), num / (1 - 0.5 ** n)), rel=1e-12)
    s = out.summary["noise_scale"]
    assert (s["measurements"], s["small_batch"], s["ema"], s["last_step"]) == (5, 8, 0.5, 21)
    assert s["last_b_simple"] == m.b_simple.iloc[-1]


def test_without_noise_scale_the_tables_are_unchanged():
    out = train(cfg(**{"train.noise_scale": None}), load_data(cfg().dataset, CPU), CPU)
    assert not set(NOISE_COLUMNS) & set(out.metrics) and "noise_scale" not in out.summary
    ids = {build_sweep(make_config(**{"train.noise_scale": v})).runs[0].run_id for v in (None, {"every": 10})}
    assert len(ids) == 2  # part of the run id once set


def _bn_model(dropout: bool):
    def build(cfg, input_shape, num_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16),
                                   torch.nn.ReLU(), *([torch.nn.Dropout(0.3)] if dropout else []),
                                   torch.nn.Linear(16, 4))
    return build


@pytest.mark.parametrize("engine", ["sequential", "threads", "vmap"])
def test_the_update_is_the_same_with_and_without_the_measurement(engine, monkeypatch):
    """BatchNorm's running statistics and dropout's random numbers included (vmap: without
    dropout, which it refuses anyway)."""
    monkeypatch.setattr(setup_mod, "build_model", _bn_model(dropout=engine != "vmap"))
    on, off = cfg(), cfg(**{"train.noise_scale": None})
    data = load_data(on.dataset, CPU)
    runs = []
    for c in (on, off):
        torch.manual_seed(1)
        if engine == "sequential":
            runs.append(train(c, data, CPU))
        else:
            states: list = []
            runs.append(train_group([c], data, CPU, state_out=states, formulation=engine)[0])
            runs[-1].summary["state"] = states[0]
    a, b = runs
    assert a.metrics["train_loss"] == b.metrics["train_loss"] and a.evals["val_loss"] == b.evals["val_loss"]
    assert a.metrics["grad_norm"] == b.metrics["grad_norm"]
    if engine != "sequential":
        for k, v in a.summary["state"].items():
            assert torch.equal(v, b.summary["state"][k]), k  # running_mean/var, num_batches_tracked


def test_both_engines_log_the_same_noise_scale():
    cs = [cfg(), cfg(**{"optimizer.lr": 0.05, "train.seed": 1})]
    data = load_data(cs[0].dataset, CPU)
    ref = [pd.DataFrame(train(c, data, CPU).metrics) for c in cs]
    for formulation in ("threads", "vmap"):
        outs = train_group(cs, data, CPU, formulation=formulation)
        for r, out in zip(ref, outs):
            m = pd.DataFrame(out.metrics)
            assert list(m.columns) == list(r.columns)
            for k in NOISE_COLUMNS:  # threads: each member is the sequential run; vmap: to rounding
                assert list(m[k]) == pytest.approx(list(r[k]), rel=1e-4), (formulation, k)
            assert out.summary["noise_scale"]["measurements"] == 8
            assert out.summary["noise_scale"]["last_b_simple"] == pytest.approx(m.b_simple.iloc[-1])


def test_the_sweep_writes_the_columns_and_the_summary(tmp_path):
    raw = make_config(sweep={"lr": [0.1]}, **{"train.steps": 12, "train.noise_scale": {"every": 4}})
    res = sweep_mod.run_sweep(build_sweep(raw), tmp_path / "s")
    (run_dir,) = [p for p in res.sweep_dir.iterdir() if (p / "result.json").exists()]
    m = pd.read_csv(run_dir / "metrics.csv")
    assert list(m.columns[-3:]) == list(NOISE_COLUMNS) and m.b_simple.notna().all()
    result = json.loads((run_dir / "result.json").read_text())
    assert validate_result(result) is None
    assert result["noise_scale"]["measurements"] == 3 and result["noise_scale"]["last_step"] == 9
    assert result["noise_scale"]["last_b_simple"] == pytest.approx(m.b_simple.iloc[-1])


class Killed(BaseException):
    """Stands in for kill -9 (as in test_checkpoint.py)."""


def test_a_resumed_run_continues_the_averages(tmp_path):
    c = cfg(**{"train.checkpoint": "epoch", "train.noise_scale": {"every": 3, "ema": 0.8}})  # 8 steps an epoch
    data = load_data(c.dataset, CPU)
    ref = train(c, data, CPU)

    def kill(step, *a):
        if step == 19:
            raise Killed

    with pytest.raises(Killed):
        train(c, data, CPU, on_step=kill, run_dir=tmp_path)
    assert (tmp_path / CHECKPOINT).exists()
    resumed = train(c, data, CPU, run_dir=tmp_path)
    assert resumed.summary["resumed_at_step"] == 16
    for k in NOISE_COLUMNS:
        assert resumed.metrics[k] == ref.metrics[k]
    assert resumed.summary["noise_scale"] == ref.summary["noise_scale"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("sets, message", [
    (["train.noise_scale.small_batch=16"], "train: noise_scale.small_batch must be below batch_size (16), got 16"),
    (["train.batch_size=1", "train.noise_scale={}"], "train: noise_scale needs batch_size >= 2"),
    (["train.noise_scale.every=0"], "train.noise_scale.every: Input should be greater than or equal to 1, got 0"),
    (["train.noise_scale.ema=1"], "train.noise_scale.ema: Input should be less than 1, got 1"),
    (["train.noise_scale.evry=3"], "train.noise_scale.evry: unknown key; did you mean 'every'?"),
])
def test_bad_settings_are_one_line_errors(sets, message, write_config):
    path = write_config(**{"train.batch_size": 16, "sweep": {"lr": [0.1]}})
    r = runner.invoke(app, ["plan", str(path), *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 2, r.output
    assert message in r.output.replace("\n", ""), r.output
    assert "Traceback" not in r.output and r.output.strip().count("\n") <= 3
