"""train.batch_schedule (Smith et al. 2017: increase B instead of decaying the LR): the batch
size changes at its milestones (epochs of examples seen, or steps), the step table's examples
are cumulative and the budget stays in examples, the LR schedule sees the steps the run takes,
a checkpointed run resumes with the same numbers, the vectorized engine hands such runs to the
sequential one with a note, and bad schedules are one-line errors."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lrsweep.cli import app
from lrsweep.config.grid import build_sweep, run_id
from lrsweep.datasets import load_data
from lrsweep.events import Note
from lrsweep.schedules import lr_at
from lrsweep.training import units
from lrsweep.training.checkpoint import CHECKPOINT
from lrsweep.training.sequential import train
from lrsweep.training.setup import budget

from conftest import make_config

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread

N = 256  # conftest's synthetic training set
CPU = torch.device("cpu")


def _config(batches, **changes):
    raw = make_config(**{"train.steps": None, "train.epochs": 3, "train.batch_size": 16, "train.eval_every": "epoch",
                         "train.batch_schedule": batches, "sweep": None, **changes})
    (spec,) = build_sweep(raw).runs
    return spec.config


def _train(cfg, **kw):
    return train(cfg, load_data(cfg.dataset, "cpu"), CPU, **kw)


def _expected_sizes(phases, steps):
    """Per-step batch sizes from (first step, batch size) pairs."""
    out = []
    for (s, b), nxt in itertools.zip_longest(phases, phases[1:], fillvalue=(steps, None)):
        out += [b] * (nxt[0] - s)
    return out


def test_epoch_milestones_grow_b_and_keep_the_budget_in_examples():
    cfg = _config({"factor": 2, "epochs": [1, 2]})  # 16 steps at 16, 8 at 32, 4 at 64: 3 x 256 examples
    out = _train(cfg)
    m = out.metrics
    assert m["batch_size"] == _expected_sizes([(0, 16), (16, 32), (24, 64)], 28)
    assert m["examples"] == list(itertools.accumulate(m["batch_size"]))  # cumulative, not step x B
    assert m["epoch"] == pytest.approx([e / N for e in m["examples"]])
    assert out.summary["examples"] == 3 * N and out.summary["steps"] == out.summary["total_steps"] == 28
    # eval_every 'epoch' = each epoch of examples, whatever B is by then
    assert out.evals["step"] == [16, 24, 28] and out.evals["examples"] == [N, 2 * N, 3 * N]
    assert [e["epoch"] for e in out.summary["epoch_times"]] == [1, 2, 3]
    assert out.summary["batch_schedule"] == {"final_batch_size": 64, "changes": [
        {"step": 16, "examples": N, "batch_size": 32}, {"step": 24, "examples": 2 * N, "batch_size": 64}]}


def test_a_milestone_inside_a_step_applies_after_it_and_the_last_batch_is_full():
    # factor 3 at 1 and 1.2 epochs: 256 examples after 16 steps -> B 48; 1.2 x 256 = 307.2 is passed
    # after 2 steps at 48 (352 examples) -> B 144; 768 examples need 3 more steps (784: the last
    # batch is a full one, as with an unscheduled examples budget).
    cfg = _config({"factor": 3, "epochs": [1, 1.2]})
    bud = budget(cfg, N)
    assert bud.phases == ((0, 0, 16), (16, 256, 48), (18, 352, 144)) and bud.total_steps == 21
    out = _train(cfg)
    assert out.metrics["batch_size"] == _expected_sizes([(0, 16), (16, 48), (18, 144)], 21)
    assert 3 * N <= out.summary["examples"] == bud.total_examples == 784 < 3 * N + 144
    assert out.evals["step"] == [16, 20, 21]  # epoch ends: 256, 544 (>= 512), and the budget's end


def test_step_milestones_rounding_and_the_cap():
    # B_k = round(10 x 1.5^k) from B_0 each time (15, 23, 34), capped at 30; steps stays a step budget
    cfg = _config({"factor": 1.5, "steps": [4, 6, 9], "max_batch_size": 30},
                  **{"train.epochs": None, "train.steps": 12, "train.batch_size": 10})
    out = _train(cfg)
    assert out.metrics["batch_size"] == _expected_sizes([(0, 10), (4, 15), (6, 23), (9, 30)], 12)
    assert out.summary["examples"] == 4 * 10 + 2 * 15 + 3 * 23 + 3 * 30
    assert out.summary["batch_schedule"]["final_batch_size"] == 30
    # milestones past the budget change nothing
    plain = _train(_config(None, **{"train.epochs": None, "train.steps": 12, "train.batch_size": 10}))
    late = _train(_config({"factor": 2, "steps": [12]}, **{"train.epochs": None, "train.steps": 12, "train.batch_size": 10}))
    pd.testing.assert_frame_equal(pd.DataFrame(plain.metrics).drop(columns=["data_time", "compute_time", "elapsed"]),
                                  pd.DataFrame(late.metrics).drop(columns=["data_time", "compute_time", "elapsed"]))
    assert late.summary["batch_schedule"] == {"final_batch_size": 10, "changes": []}


def test_the_lr_schedule_sees_the_steps_the_run_takes():
    sched = {"name": "multistep", "stepvalues": [10, 20], "gamma": 0.5}
    cfg = _config({"factor": 2, "epochs": [1, 2]}, **{"schedule": sched, "optimizer.lr": 0.1})
    out = _train(cfg)
    assert out.metrics["lr"] == pytest.approx([0.1 * 0.5 ** ((s >= 10) + (s >= 20)) for s in range(28)])
    cos = _config({"factor": 2, "epochs": [1, 2]}, **{"schedule": {"name": "cosine"}, "optimizer.lr": 0.1})
    bud = budget(cos, N)
    lrs = _train(cos).metrics["lr"]
    assert lrs == pytest.approx([lr_at(cos.schedule, 0.1, s, 28, bud.steps_per_epoch) for s in range(28)])
    assert lrs[-1] < 0.001  # total_steps is the 28 steps taken, not 48 at B_0: the cosine ends at 0


class Killed(BaseException):
    """Stands in for kill -9."""


def test_a_resumed_run_gives_the_numbers_of_an_uninterrupted_one(tmp_path):
    # epoch_subset 240 at B_0 16: 15 steps an epoch (240 examples). x3 at 0.5 and 2 epochs: 8 steps
    # at 16, 8 at 48, 7 at 144. The first epoch end, step 11 (272 examples), falls inside a
    # permutation: steps 9-10 took 96 of the first one's 112 left, step 11 began a second one.
    cfg = _config({"factor": 3, "epochs": [0.5, 2]}, **{"train.checkpoint": "epoch", "train.eval_every": 4,
                                                     "dataset.epoch_subset": 240, "train.epochs": 6})
    ref = _train(cfg)
    run_dir = tmp_path / "run"

    def kill(step, *a):
        if step == 13:
            raise Killed

    with pytest.raises(Killed):
        _train(cfg, on_step=kill, run_dir=run_dir)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["loop"]["step"] == 11 and len(state["order"]["left"]) == 240 - 48
    resumed = _train(cfg, run_dir=run_dir)
    assert resumed.summary["resumed_at_step"] == 11 and resumed.summary["steps"] == 23
    times = ["data_time", "compute_time", "elapsed"]
    pd.testing.assert_frame_equal(pd.DataFrame(ref.metrics).drop(columns=times),
                                  pd.DataFrame(resumed.metrics).drop(columns=times))
    pd.testing.assert_frame_equal(pd.DataFrame(ref.evals).drop(columns=["elapsed"]),
                                  pd.DataFrame(resumed.evals).drop(columns=["elapsed"]))
    assert len(set(ref.metrics["batch_size"])) == 3


def test_the_vectorized_engine_hands_scheduled_runs_to_the_sequential_one_with_a_note():
    raw = make_config(**{"train.steps": 6, "train.batch_size": 16, "train.batch_schedule": {"factor": 2, "steps": [3]},
                         "sweep": {"lr": [0.01, 0.1]}})
    specs = build_sweep(raw).runs
    plan = units.plan_units(specs, engine="vectorized")
    assert [(u.engine, len(u.specs)) for u in plan] == [(units.Engine.SEQUENTIAL, 1)] * 2
    assert all("batch_schedule" in u.note for u in plan)
    assert units.plan_units(specs)[0].note is None  # auto on the CPU is sequential anyway: nothing to say
    events = []
    (rec,) = list(units.train_unit(plan[0], events.append))
    assert rec.result.engine_note == plan[0].note and rec.result.batch_schedule["final_batch_size"] == 32
    assert [e.text for e in events if isinstance(e, Note)] == [plan[0].note]


def test_unset_keeps_run_ids():
    raw = make_config(sweep=None)
    assert run_id(build_sweep(raw).runs[0].config) == build_sweep(raw).runs[0].run_id
    with_schedule = make_config(sweep=None, **{"train.batch_schedule": {"factor": 2, "steps": [3]}})
    assert build_sweep(with_schedule).runs[0].run_id != build_sweep(raw).runs[0].run_id


@pytest.mark.parametrize("schedule,fragment", [
    ({"factor": 2, "epochs": [1], "steps": [3]}, "one of (epochs, steps), got epochs, steps"),
    ({"factor": 2}, "one of (epochs, steps)"),
    ({"factor": 1, "steps": [3]}, "train.batch_schedule.factor"),
    ({"factor": 2, "steps": [5, 3]}, "increasing values > 0"),
    ({"factor": 2, "steps": [3], "max_batch_size": 8}, "train.batch_schedule.max_batch_size: 8 is below train.batch_size 16"),
    ({"factor": 8, "epochs": [1, 2]}, "would be 1024, more than the 256 training examples per epoch"),
])
def test_bad_schedules_are_one_line_errors(schedule, fragment, write_config):
    path = write_config(**{"train.batch_size": 16, "train.steps": None, "train.epochs": 3,
                           "train.batch_schedule": schedule, "sweep": None})
    r = CliRunner().invoke(app, ["plan", str(path)])
    assert r.exit_code == 2, r.output
    out = r.output.replace("\n", "")
    assert fragment in out and "Traceback" not in r.output, r.output
    assert r.output.strip().count("\n") <= 3  # one logical line (rich may wrap it)


def _o7(name: str, n_train: int) -> dict:
    """The arms of a reproduction config, by (schedule, batch schedule set): (config, budget)."""
    from pathlib import Path

    from lrsweep.config.grid import load_sweep

    runs = load_sweep(Path(__file__).resolve().parents[1] / "configs" / name).runs
    return {(r.config.schedule.name, r.config.train.batch_schedule is not None): (r.config, budget(r.config, n_train))
            for r in runs if r.config.train.seed == 0}


def test_the_o7_arms_see_equal_examples_with_the_lr_steps_at_the_batch_milestones():
    small = _o7("o7.small.yaml", 60000)
    assert {b.total_examples for _, b in small.values()} == {3 * 60000}
    (decay, bd), (_, bg) = small["multistep", False], small["constant", True]
    assert (bd.total_steps, bg.total_steps) == (1800, 600 + 120 + 24)
    # the LR falls after the examples at which B grows (600 and 1200 steps of B = 100: epochs 1 and 2)
    assert [v * decay.train.batch_size for v in decay.schedule.stepvalues] == [e for _, e, _ in bg.phases[1:]]
    full = _o7("o7.full.yaml", 50000)
    spread = {b.total_examples for _, b in full.values()}
    assert max(spread) - min(spread) < 16000  # equal up to the growing arm's last batch of 16000
    hybrid, bh = full["multistep", True]
    start, seen, B = bh.phases[-1]  # its LR step, in steps, falls at epoch 160 of examples
    assert seen + (hybrid.schedule.stepvalues[0] - start) * B == 160 * bh.steps_per_epoch * 128


def test_a_sweep_over_the_schedule_runs_and_reports(write_config, tmp_path):
    # a mapping-valued axis, and result.json's batch_schedule record, reach the closing report
    path = write_config(**{"train.steps": 6, "train.batch_size": 16, "train.eval_every": 3,
                           "sweep": {"train.batch_schedule": [None, {"factor": 2, "steps": [3]}]}})
    r = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert '{"factor": 2, "steps": [3]}' in r.output.replace("\n", "")
