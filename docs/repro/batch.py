"""O5, O6, O8: what the batch size does to epoch time, accuracy and the LR it needs (documents
000, 001, 002, 004). These grids have one seed, so a difference is judged against the binomial
standard error of the test set (and, for times, against the spread over a batch size's runs)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep import storage
from lrsweep.analysis.runs import read_table

from repro.common import binomial_se, bnoise, check, g, img, judged, md, results, saved, suggestions, val_images, verdict


def se_diff(p1: float, p2: float, n: int) -> float:
    """Standard error of the difference of two accuracies on n images, as if the two were scored
    on independent sets (an upper bound: the same images make their errors correlated)."""
    return math.hypot(binomial_se(p1, n), binomial_se(p2, n))


def o5_block() -> str:
    arms = {"equal epochs (2)": "o5-small", "equal updates (400)": "o5-longer-small"}
    rows, per_epoch, best = [], [], {}
    for arm, name in arms.items():
        r = results(name)
        for b, d in r.groupby("batch_size"):
            ok = d[d.status == "complete"]
            x = ok.loc[ok.final_val_acc.idxmax()]
            best[(arm, b)] = x
            rows.append({"arm": arm, "B": b, "updates": int(x.steps), "epochs": g(x.epochs, 3), "best LR": g(x.lr),
                         "final val acc": g(x.final_val_acc, 4), "final train acc": g(x.final_train_acc, 4),
                         "final train loss": g(x.final_train_loss, 3)})
            if name == "o5-small":
                t = ok.time_s / ok.epochs
                per_epoch.append({"B": b, "s per epoch": t.mean(), "spread": t.std(), "runs": len(t),
                                  "compute s per epoch": (ok.compute_time_s / ok.epochs).mean(),
                                  "data s per epoch": (ok.data_time_s / ok.epochs).mean()})
    pe = pd.DataFrame(per_epoch)
    n_img = val_images(results("o5-small"))
    Bs = sorted({b for _, b in best})
    big = Bs[-1]
    ep = lambda b: best[("equal epochs (2)", b)]  # noqa: E731
    up = lambda b: best[("equal updates (400)", b)]  # noqa: E731
    small_best = max((ep(b) for b in Bs[:-1]), key=lambda x: x.final_val_acc)
    gap = small_best.final_val_acc - ep(big).final_val_acc
    se_gap = se_diff(small_best.final_val_acc, ep(big).final_val_acc, n_img)
    # a generalization gap is train minus val accuracy: under-training lowers both, a sharp
    # minimum only the second
    gen = {b: ep(b).final_train_acc - ep(b).final_val_acc for b in Bs}
    closed = up(big).final_val_acc - small_best.final_val_acc
    se_closed = se_diff(up(big).final_val_acc, small_best.final_val_acc, n_img)
    # epoch time: a fall between neighbouring B counts when it exceeds twice the spread over
    # each B's runs (one per LR, timed on a shared machine)
    t, sp = list(pe["s per epoch"]), list(pe["spread"].fillna(0))
    falls = [(a, b) for (a, ta, sa), (b, tb, sb) in zip(zip(Bs, t, sp), zip(Bs[1:], t[1:], sp[1:])) if ta - tb > 2 * math.hypot(sa, sb)]
    # O7's second half: the best B at each fixed LR, and by how much it beats the next best
    r = results("o5-small")
    o7 = []
    for lr, d in r.groupby("lr"):
        ok = d[d.status == "complete"].sort_values("final_val_acc", ascending=False)
        if len(ok):
            margin = ok.final_val_acc.iloc[0] - ok.final_val_acc.iloc[1] if len(ok) > 1 else math.nan
            o7.append({"LR": g(lr), "best B at this LR (equal epochs)": int(ok.batch_size.iloc[0]),
                       "its val acc": g(ok.final_val_acc.iloc[0], 4), "margin over the next B": g(margin, 2),
                       "resolved (> 2 SE)": "yes" if margin > 2 * se_diff(ok.final_val_acc.iloc[0], ok.final_val_acc.iloc[1], n_img) else "no"})
    o7 = pd.DataFrame(o7)
    bestB = list(o7["best B at this LR (equal epochs)"])
    checks = [check(bool(falls), "an epoch gets cheaper as B grows: " + ", ".join(f"B={b}: {g(x, 3)} ± {g(s, 2)} s" for b, x, s in zip(Bs, t, sp))
                    + "; resolved falls (> 2× the spread over LRs): " + (", ".join(f"{a} → {b}" for a, b in falls) or "none")),
              judged(gap > 2 * se_gap, gap > 2 * se_gap, f"equal epochs: B={big} ends {g(gap, 2)} below the best smaller B "
                    f"({g(small_best.final_val_acc, 4)} at B={int(small_best.batch_size)}; 2 SE = {g(2 * se_gap, 2)})"),
              check(gen[big] > max(gen[b] for b in Bs[:-1]) + 2 * binomial_se(ep(big).final_val_acc, n_img),
                    f"the B={big} deficit is a generalization gap (train − val accuracy larger than at smaller B): "
                    + ", ".join(f"B={b}: {g(v, 2)}" for b, v in gen.items())
                    + f"; its train loss is {g(ep(big).final_train_loss, 3)} against {g(min(ep(b).final_train_loss for b in Bs[:-1]), 3)}–"
                      f"{g(max(ep(b).final_train_loss for b in Bs[:-1]), 3)}: it is under-trained after {int(ep(big).steps)} updates"),
              check(closed > -2 * se_closed, f"equal updates (train longer): B={big} after {int(up(big).steps)} updates ({g(up(big).epochs, 3)} epochs) "
                    f"reaches {g(up(big).final_val_acc, 4)} against the best smaller B with equal epochs {g(small_best.final_val_acc, 4)} "
                    f"(difference {g(closed, 2)}, 2 SE = {g(2 * se_closed, 2)}); it also saw {g(up(big).epochs / ep(big).epochs, 2)}× the epochs"),
              judged((o7["resolved (> 2 SE)"] == "yes").all(), bestB == sorted(bestB),
                    "O7 (second half): the best B at a fixed LR grows with the LR: "
                    + ", ".join(f"LR {a}: B={b}" for a, b in zip(o7["LR"], bestB))
                    + f" (margins over the next B resolved at {int((o7['resolved (> 2 SE)'] == 'yes').sum())} of {len(o7)} LRs)")]
    gen_gap = checks[2].startswith("- ✅")
    word = "partly reproduced"
    text = (f"one seed per cell; accuracies on {n_img} test images (binomial SE {g(binomial_se(small_best.final_val_acc, n_img), 2)}). "
            f"Epochs get cheaper with B ({'resolved between ' + ', '.join(f'{a}→{b}' for a, b in falls) if falls else 'not resolved'}); "
            f"B={big} ends {g(gap, 2)} below the best smaller B with equal epochs and "
            + ("its train−val gap grows: a generalization gap" if gen_gap else
               f"its train loss is {g(ep(big).final_train_loss, 3)}: under-training ({int(ep(big).steps)} updates), not a generalization gap")
            + f"; with {int(up(big).steps)} updates it reaches {g(up(big).final_val_acc, 4)} ({g(closed, 2)} from the smaller B's best).")
    crit = saved("o5-small").table("critical")
    sug = suggestions("o5-small")
    rep = saved("o5-small").best_csv()
    cmp = []
    for _, s in sug.iterrows():
        for key, arm in (("o5-small", "equal epochs"), ("o5-longer-small", "equal updates")):
            bb = rep[(rep.batch_size == s.batch_size) & ((rep["sweep"] == key) if "sweep" in rep else True)]
            if len(bb):
                bb = bb.iloc[0]
                cmp.append({"B": int(s.batch_size), "arm": arm, "grid best LR": g(bb.best_lr), "interpolated": g(bb.lr_opt),
                            "range test valley": g(s["valley"]), "minimum/10": g(s["minimum/10"])})
    pe_tab = pe.assign(**{"s per epoch": [f"{g(a, 3)} ± {g(b, 2)}" for a, b in zip(pe["s per epoch"], pe["spread"])]}) \
        .drop(columns="spread").rename(columns={"s per epoch": "s per epoch (mean ± std over LRs)", "runs": "runs (LRs)"})
    return "\n\n".join([md(pd.DataFrame(rows)), md(pe_tab),
                        "Grid optimum against the range test (100 steps per B) on the same setup:", md(pd.DataFrame(cmp)),
                        bnoise(crit, "O5"), md(o7), "\n".join(checks), verdict(word, text),
                        img(saved("o5-small").figure("heatmap", sweep="o5-small"), "o5-heatmap-epochs.png", "O5: val acc, B x LR, equal epochs"),
                        img(saved("o5-small").figure("heatmap", sweep="o5-longer-small"), "o5-heatmap-updates.png", "O5: val acc, B x LR, equal updates"),
                        img(saved("o5-small").figure("critical_batch", sweep="o5-small"), "o5-critical.png", "O5: steps vs examples to train loss 0.3")])


def _outcome(r: pd.DataFrame, b, arm: str) -> float:
    x = r[(r.batch_size == b) & (r.arm == arm)].iloc[0]
    return x.final_val_acc if x.status == "complete" else -1.0


def _fmt_outcome(r: pd.DataFrame, b, arm: str) -> str:
    v = _outcome(r, b, arm)
    return "div" if v < 0 else f"{v:.4f}"


def o5_optimum(b: int) -> tuple[float, str]:
    """O5's interpolated optimum at batch size b (equal epochs: O6's budget too) and its edge
    note, or NaN when O5 was not run."""
    try:
        rep = saved("o5-small").best_csv()
    except (OSError, ValueError, KeyError):
        return math.nan, ""
    bb = rep[(rep.batch_size == b) & ((rep["sweep"] == "o5-small") if "sweep" in rep else True)]
    if not len(bb):
        return math.nan, ""
    return float(bb.iloc[0].lr_opt), (bb.iloc[0].edge if isinstance(bb.iloc[0].edge, str) else "")


def o6_block() -> str:
    r = results("o6-small")
    r["arm"] = [f"{rule}" + (" + warmup" if w else "") for rule, w in zip(r["lr_scaling.rule"], r["schedule.warmup_epochs"])]
    n_img = val_images(r)
    arms = ("none", "sqrt", "linear", "linear + warmup")
    rows = []
    for b, d in r.groupby("batch_size"):
        row = {"B": b}
        for arm in arms:
            x = d[d.arm == arm].iloc[0]
            row[arm] = (f"{x.final_val_acc:.4f}" if x.status == "complete" else "diverged") + f" (LR {g(x.lr)})"
        rows.append(row)
    Bs = sorted(r.batch_size.unique())
    big = r[r.batch_size == max(Bs)].set_index("arm")
    score = big.final_val_acc.where(big.status == "complete", -1)
    winner = score.idxmax()
    runner = score.drop(winner).max()
    margin = score.max() - runner
    se = se_diff(score.max(), max(runner, 0), n_img)
    warm = [(b, _outcome(r, b, "linear + warmup"), _outcome(r, b, "linear")) for b in Bs]
    hurts = [(b, w, l) for b, w, l in warm if l - w > 2 * se_diff(max(w, 0), max(l, 0), n_img)]
    base = r[r.batch_size == min(Bs)].lr.iloc[0]
    opt32, edge = o5_optimum(int(min(Bs)))
    cold = r[r["schedule.warmup_epochs"] == 0]  # the arms without warmup
    diverged, trained = cold[cold.status == "diverged"], cold[cold.status == "complete"]
    warm_ok = r[(r["schedule.warmup_epochs"] > 0) & (r.status == "complete")]
    checks = [judged(margin > 2 * se, winner == "linear + warmup",
                    f"at B={max(Bs)}: best arm '{winner}' ({g(score.max(), 4)}), {g(margin, 2)} ahead of the next (2 SE = {g(2 * se, 2)}); "
                    + ", ".join(f"{a} {('div' if s < 0 else g(s, 4))}" for a, s in score.items())),
              check(not hurts, "warmup never hurts linear scaling by more than 2 SE, per B (linear + warmup vs linear): " + ", ".join(
                    f"B={b}: {_fmt_outcome(r, b, 'linear + warmup')} vs {_fmt_outcome(r, b, 'linear')}" for b in Bs)),
              f"- the base LR {g(base)} at B={min(Bs)}: O5's optimum there (same model, SGD, 2 epochs) is {g(opt32)}"
              + (f" (at the grid's {edge} edge: the optimum may lie lower still)" if edge else "")
              + (f", so every rule starts {g(base / opt32, 2)}× above it" if math.isfinite(opt32) else ""),
              (f"- without warmup every LR ≥ {g(diverged.lr.min())} diverged and the largest that trained was {g(trained.lr.max())}; "
               f"with warmup the largest that trained was {g(warm_ok.lr.max())}") if len(diverged) else "- no run without warmup diverged"]
    word = "partly reproduced"
    text = (f"one seed per cell; accuracies on {n_img} test images (binomial SE about {g(binomial_se(0.96, n_img), 2)}). "
            f"Warmup makes ×k train where it diverged without it"
            + (f" (B={', '.join(str(b) for b, w, l in warm if w > 0 > l)})" if any(w > 0 > l for b, w, l in warm) else " nowhere in this grid")
            + f"; at B={max(Bs)} the best arm is '{winner}' "
            + ("by more than 2 SE" if margin > 2 * se else "within 2 SE of the next")
            + (f". The base LR is {g(base / opt32, 2)}× O5's optimum at B={min(Bs)}, so ×k overshoots sooner than it would from a "
               f"tuned base" if math.isfinite(opt32) else "") + ".")
    return "\n\n".join([md(pd.DataFrame(rows)), "\n".join(checks), verdict(word, text), bnoise(saved("o6-small").table("critical"), "O6"),
                        img(saved("o6-small").figure("loss_vs_examples", **{"lr_scaling.rule": "linear", "schedule.warmup_epochs": 0}), "o6-linear.png",
                            "O6: linear scaling without warmup, train loss against examples per B")])


def o8_block() -> str:
    r = results("o8-small").sort_values("batch_size")
    n_img = val_images(r)
    target = 0.97
    rows = []
    for _, x in r.iterrows():
        et = pd.DataFrame((storage.read_result(Path(x.path)) or {}).get("epoch_times") or [])
        full = et[et.epoch >= 1] if len(et) else et
        data = full.data_s.sum() / max(len(full), 1) if len(full) else math.nan
        comp = full.compute_s.sum() / max(len(full), 1) if len(full) else math.nan
        e = read_table(x.path, "evals")
        # the time to the target is read at evaluations: it is known to within one interval
        step_s = x.time_s / max(x.steps, 1)
        every = int(e.step.diff().median()) if len(e) > 1 else 0
        rows.append({"B": int(x.batch_size), "status": x.status, "steps": int(x.steps), "of": int(x.total_steps),
                     "time to 97% (s)": g(x.time_to_val_acc, 3), "± one eval interval (s)": g(every * step_s, 2),
                     "examples to 97%": g(x.examples_to_val_acc, 3),
                     "final val acc": g(x.final_val_acc, 4), "best val acc": g(x.best_val_acc, 4),
                     "train time (s)": g(x.time_s, 3),
                     "data s/epoch": g(data, 2), "compute s/epoch": g(comp, 3),
                     "data share": (f"{100 * data / (data + comp):.1f}%" if data + comp > 0 else "—"),
                     "_res": every * step_s, "_share": 100 * data / (data + comp) if data + comp > 0 else math.nan})
    tab = pd.DataFrame(rows)
    hit = r[r.time_to_val_acc.notna()]
    fastest = int(hit.loc[hit.time_to_val_acc.idxmin(), "batch_size"]) if len(hit) else None
    t_sorted = hit.sort_values("time_to_val_acc")
    res = dict(zip(tab.B, tab._res))
    lead = (t_sorted.time_to_val_acc.iloc[1] - t_sorted.time_to_val_acc.iloc[0]) if len(t_sorted) > 1 else math.nan
    lead_res = res[fastest] + res[int(t_sorted.batch_size.iloc[1])] if len(t_sorted) > 1 else math.nan
    osc = {}
    for _, x in r.iterrows():
        m = read_table(x.path)
        if len(m) > 50:
            v = m.train_loss.to_numpy()
            osc[int(x.batch_size)] = float(np.mean(np.abs(np.diff(v[: min(len(v), 1000)]))))
    b1 = r[r.batch_size == r.batch_size.min()].iloc[0]
    shares = [s for s in tab._share if math.isfinite(s)]
    stopped_early = b1.steps < b1.total_steps
    checks = [judged(lead > lead_res, fastest is not None and 6 <= fastest <= 60,
                    f"fastest to {target:.0%} in wall time: B={fastest} ({g(hit.time_to_val_acc.min(), 3)} s), "
                    f"{g(lead, 2)} s ahead of the next (B={int(t_sorted.batch_size.iloc[1])}; the two read-offs are known to "
                    f"{g(lead_res, 2)} s together, one evaluation interval each, on a shared machine)" if len(t_sorted) > 1 else
                    f"fastest to {target:.0%}: B={fastest}"),
              check(pd.isna(b1.time_to_val_acc),
                    f"B={int(b1.batch_size)} does not reach {target:.0%}: best val acc {g(b1.best_val_acc, 4)}, status {b1.status}"
                    + (f", stopped at step {int(b1.steps)} of {int(b1.total_steps)} ({b1.stop_reason}: {b1.error})" if stopped_early and isinstance(b1.error, str)
                       else f" after {int(b1.steps)} steps")
                    + (" — 'never' holds for the steps it trained, not for the full budget" if stopped_early else "")),
              check(all(osc[a] >= osc[b] for a, b in zip(sorted(osc), sorted(osc)[1:])),
                    "per-step loss oscillation (mean |Δloss| over the first 1000 steps) falls with B: "
                    + ", ".join(f"B={b}: {g(v, 2)}" for b, v in sorted(osc.items()))),
              check(shares == sorted(shares) and max(shares) > 50, "the data share of the epoch time grows with B and dominates (> 50%): "
                    + ", ".join(f"{x['B']}: {x['data share']}" for x in rows))]
    word = "partly reproduced"
    text = (f"one seed; times on a shared machine; accuracies on {n_img} test images (binomial SE at 97%: "
            f"{g(binomial_se(target, n_img), 2)}, so a run within ~1 SE of the target may cross it by chance). "
            f"Fastest B={fastest}" + (f", ahead by {g(lead, 2)} s against a read-off resolution of {g(lead_res, 2)} s" if len(t_sorted) > 1 else "")
            + f"; B={int(b1.batch_size)} peaked at {g(b1.best_val_acc, 4)}"
            + (f" before it stopped at step {int(b1.steps)} of {int(b1.total_steps)}" if stopped_early else "") + ".")
    crit = saved("o8-small").table("critical")
    return "\n\n".join([md(tab.drop(columns=["_res", "_share"])), bnoise(crit, "O8"), "\n".join(checks), verdict(word, text),
                        img(saved("o8-small").figure("oscillation"), "o8-oscillation.png", "O8: per-step loss oscillation against B"),
                        img(saved("o8-small").figure("loss_vs_step"), "o8-loss_vs_step.png", "O8: train loss against steps per B")])
