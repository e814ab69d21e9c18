"""Which metrics pick the best LR, which direction is better, and how a failed run scores.

Kept apart from cells.py, with no heavy imports, because the CLI builds its `--metric` choices
from METRICS when it starts.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep.errors import ParameterError

# metric -> True if larger is better
METRICS = {
    "final_val_acc": True, "best_val_acc": True, "final_val_loss": False, "final_train_loss": False,
    "steps_to_target": False, "examples_to_target": False, "time_to_target": False,
    # document 003: train-loss reduction over a fixed number of steps after the target loss is
    # first reached; not in result.json, computed from metrics.csv (cells.add_loss_drop)
    "loss_drop_after_target": True,
    # the same judging denoised: the validation loss (one fixed evaluation set) at the target
    # minus at the stop; computed from evals.csv here (val_loss_drop_after_target)
    "val_loss_drop_after_target": True,
}
# What `lrsweep run` can rank right after training: everything result.json holds.
RESULT_METRICS = {k: v for k, v in METRICS.items() if k not in ("loss_drop_after_target", "val_loss_drop_after_target")}


def check_metric(metric: str, known: dict = METRICS) -> bool:
    """True if larger is better; a ParameterError naming `metric` if it is not known."""
    if metric not in known:
        raise ParameterError("metric", f"expected one of ({', '.join(known)}), got {metric!r}")
    return known[metric]


def val_loss_drop_after_target(df: pd.DataFrame) -> pd.Series:
    """Document 003's judging without the train loss's batch noise, per run: the validation loss
    at the evaluation of the step the train-loss target was first reached minus the one at the
    stop, train.stop_after_target steps later (the tracker evaluates at both; the validation
    set is the same images both times, so the difference is the model's progress alone).

    NaN for a run that is not complete, never reached the target, did not end by
    stop_after_target (its budget ran out first: fewer steps after the target), or has no
    evaluation at the target step (trained by an lrsweep that did not evaluate there)."""
    from lrsweep.storage import EVALS  # here, not at the top: the CLI imports this module at start

    out = pd.Series(np.nan, index=df.index, dtype=float)
    if not {"path", "status", "steps_to_train_loss", "stop_reason"} <= set(df.columns):
        return out
    for i, r in df.iterrows():
        hit = r["steps_to_train_loss"]
        if r["status"] != "complete" or r["stop_reason"] != "stop_after_target" or pd.isna(hit):
            continue
        try:
            e = pd.read_csv(Path(r["path"]) / EVALS)
            at, last = e.loc[e["step"] == hit, "val_loss"], e["val_loss"].iloc[-1]
        except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError):
            continue  # unreadable: no value, like a run that never reached the target
        if len(at):
            out[i] = float(at.iloc[0]) - float(last)
    return out


# Metrics that are neither in result.json nor added by summarize (report.py adds
# loss_drop_after_target): computed from the run folders when a table lacks them.
DERIVED = {"val_loss_drop_after_target": val_loss_drop_after_target}


def scores(df: pd.DataFrame, metric: str, higher: bool) -> pd.Series:
    """The metric per run, with diverged/failed/missing values replaced by the worst value, so
    a run that blew up is never silently dropped and a cell with one diverged seed loses."""
    if metric in DERIVED and metric not in df:
        df = df.assign(**{metric: DERIVED[metric](df)})
    worst = -math.inf if higher else math.inf
    v = pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)
    ok = (df["status"] == "complete") if "status" in df else True
    return v.where(ok & v.notna(), worst).astype(float)


# Metrics that only have a value once a run reached the train-loss (or val-acc) target: a run
# without one "never reached the target", which says nothing about whether it learned.
TARGET_METRICS = ("steps_to_target", "examples_to_target", "time_to_target", "loss_drop_after_target",
                  "val_loss_drop_after_target")

# Classes of the fixed datasets (synthetic: dataset.synthetic.classes), for the chance accuracy.
DATASET_CLASSES = {"mnist": 10, "fashion-mnist": 10, "digits": 10, "tiny-imagenet": 200, "cifar10": 10, "cifar100": 100}
# A run "learned" when its validation accuracy beats guessing by more than this fraction of the
# chance level (0.12 on 10 classes, 0.3 on 4): a few per cent above chance is within the noise of
# a small validation set, and a diverging-then-recovering run often sits there.
CHANCE_MARGIN = 0.2


def chance_accuracy(config: dict) -> float:
    """1 / number of classes of a run's dataset (config.json as a dict); NaN when unknown."""
    ds = (config or {}).get("dataset") or {}
    n = (ds.get("synthetic") or {}).get("classes", 4) if ds.get("name") == "synthetic" else DATASET_CLASSES.get(ds.get("name"))
    return 1.0 / n if n else math.nan


def learned(df: pd.DataFrame) -> pd.Series:
    """Per run: did it learn? Complete, and better than chance (final val accuracy above
    chance·(1 + CHANCE_MARGIN)) when the accuracy and the chance level are known; otherwise its
    final train loss below its first step's loss, when both are known; otherwise complete is all.

    The accuracy decides when there is one: the first step's loss of a small batch is one noisy
    sample, and a loss a little below it can still mean a model that predicts one class.
    """
    def col(name):
        return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, index=df.index)

    ok = (df["status"] == "complete") if "status" in df else pd.Series(True, index=df.index)
    acc, chance = col("final_val_acc"), col("chance_acc")
    loss, first = col("final_train_loss"), col("initial_loss")
    by_acc = acc.notna() & chance.notna()
    by_loss = ~by_acc & loss.notna() & first.notna()
    above = acc > chance * (1 + CHANCE_MARGIN)
    return ok & (~by_acc | above) & (~by_loss | (loss < first))
