"""O1–O4 (document 000): the LR's two failure modes, the Caffe policies, cyclical LR and SGDR,
tuned SGD against Adam. Every check is judged against its uncertainty: the seed spread pooled
over the grid's cells (two seeds each) and the binomial standard error of the test set."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lrsweep.analysis.runs import read_table

from repro.common import (ONE_B, acc_cell, best_cells, best_per_group, binomial_se, bnoise, by_group_lr, check, figure, g, img,
                          md, paths, pooled_seed_std, results, saved, suggestions, unresolved, val_images, verdict)


def band(sigma: float, n_seeds: int) -> float:
    """Two standard errors of the difference of two n-seed means with seed std `sigma`: a gap
    between two cells smaller than this is not resolved."""
    return 2 * sigma * np.sqrt(2 / max(n_seeds, 1))


def noise_text(sigma: float, dof: int, n_img: int, p: float, n_seeds: int) -> str:
    return (f"pooled seed std σ = {g(sigma, 2)} ({dof} degrees of freedom), so gaps under 2·σ·√(2/{n_seeds}) = "
            f"{g(band(sigma, n_seeds), 2)} between {n_seeds}-seed means are not resolved; the binomial standard error "
            f"of an accuracy of {g(p, 3)} on the {n_img} test images is {g(binomial_se(p, n_img), 2)}")


def o1_block() -> str:
    r = results("o1-small")
    B = sorted(r.batch_size.unique())
    rows = []
    for lr, d in r.groupby("lr"):
        cell = {int(x.batch_size): ("diverged" if x.status == "diverged" else g(x.final_train_loss, 3)) for _, x in d.iterrows()}
        rows.append({"LR": g(lr), **{f"B={b} final train loss": cell.get(int(b), "—") for b in B}})
    best = saved("o1-small").best_csv()
    sug = suggestions("o1-small")
    cmp_rows = []
    for b in B:
        bb = best[best.batch_size == b].iloc[0]
        s = sug[sug.batch_size == b].iloc[0]
        cmp_rows.append({"B": b, "grid best LR": g(bb.best_lr), "interpolated optimum": g(bb.lr_opt),
                         "range test: valley": g(s["valley"]), "steepest": g(s["steepest"]),
                         "minimum/10": g(s["minimum/10"]), "clr-upper": g(s["clr-upper"])})
    checks, ratios = [], []
    for b in B:
        col = r[r.batch_size == b].sort_values("lr")
        ok = col[col.status == "complete"]
        i_min = ok.final_train_loss.idxmin()
        lr_min = ok.loc[i_min, "lr"]
        ratios.append(ok.final_train_loss.iloc[0] / ok.loc[i_min, "final_train_loss"])
        falls = ok.final_train_loss.iloc[0] > 2 * ok.loc[i_min, "final_train_loss"]
        rises = (col[col.lr > lr_min].status == "diverged").any() or (ok[ok.lr > lr_min].final_train_loss > ok.loc[i_min, "final_train_loss"]).all()
        checks.append(check(falls and rises and lr_min not in (col.lr.min(), col.lr.max()),
                            f"B={b}: the loss falls from LR {g(col.lr.min())} ({g(ok.final_train_loss.iloc[0])}) to a minimum "
                            f"at LR {g(lr_min)} ({g(ok.loc[i_min, 'final_train_loss'])}), then rises; "
                            f"{int((col.status == 'diverged').sum())} of {len(col)} LRs diverged "
                            f"(from LR {g(col[col.status == 'diverged'].lr.min())}), recorded as data"))
    crit = saved("o1-small").table("critical")
    word = "reproduced" if all(c.startswith("- ✅") for c in checks) else "not reproduced"
    return "\n\n".join([
        md(pd.DataFrame(rows)),
        "Grid optimum against the range test on the same setup (100 steps, LR ramped 1e-4 → 10):",
        md(pd.DataFrame(cmp_rows)),
        bnoise(crit, "O1"),
        "\n".join(checks),
        verdict(word, f"one seed (no spread measured); the effect is a factor {g(min(ratios), 2)}–{g(max(ratios), 2)} in "
                      f"train loss between the smallest LR and the best, far beyond any seed noise, and divergence is a "
                      f"status, not a number; where exactly the optimum lies between grid points is not resolved "
                      f"(half-decade grid)."),
        img(saved("o1-small").figure("metric_vs_lr"), "o1-loss_vs_lr.png", "O1: final train loss against LR, B = 32 and 256"),
        img(paths.runs / "o1-small" / "range_test" / "range_test.png", "o1-range_test.png", "O1: LR range test, B = 32 and 256"),
    ])


def _three_way(supported: bool, contradicted: bool, text: str) -> str:
    if supported:
        return check(True, text)
    if contradicted:
        return check(False, text)
    return unresolved(text + " — not resolved")


def o2_block() -> str:
    r = results("o2-small")
    order = ["fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid"]
    r["policy"] = pd.Categorical(r["schedule.name"], order)
    r = r.sort_values(["policy", "lr"])
    tab = by_group_lr(r, "policy")
    best = best_per_group(r, "policy")
    n_seeds = int(r.groupby(["policy", "lr"], observed=True).size().max())
    sigma, dof = pooled_seed_std(best_cells(r, "policy", best), ["policy", "lr"])
    d = band(sigma, n_seeds)
    n_img = val_images(r)
    best.insert(0, "rank", range(1, len(best) + 1))
    acc = dict(zip(best.group, best["mean"]))
    top = best["mean"].max()
    best["tied with the best (gap < band)"] = ["yes" if top - m < d else "" for m in best["mean"]]
    best = best.rename(columns={"group": "policy", "mean": f"final val acc (mean of {n_seeds} seeds)", "std": "seed std"}) \
        .drop(columns="n")
    above = lambda a, b: acc[a] - acc[b] > d  # noqa: E731 (resolved: a beats b)
    others = lambda ps: [p for p in acc if p not in ps]  # noqa: E731
    rank = dict(zip(best.policy, best["rank"]))
    pair = lambda ps: ", ".join(f"{p} {g(acc[p], 4)} (rank {rank[p]})" for p in ps)  # noqa: E731
    top2, close, worst = ("step", "multistep"), ("exp", "poly"), ("inv", "fixed")
    checks = [
        _three_way(all(above(p, q) for p in top2 for q in others(top2)), any(above(q, p) for p in top2 for q in others(top2)),
                   f"step/multistep best: {pair(top2)}"),
        _three_way(all(top - acc[p] < d for p in close), any(top - acc[p] > d for p in close),
                   f"exp/poly close behind: {pair(close)}, best {g(top, 4)}"),
        _three_way(all(above(q, p) for p in worst for q in others(worst)), any(above(p, q) for p in worst for q in others(worst)),
                   f"inv/fixed worst: {pair(worst)}"),
    ]
    resolved = [(a, b) for a in acc for b in acc if above(a, b)]
    tied = [p for p in acc if top - acc[p] < d]
    word = "not reproduced" if any(c.startswith("- ❌") for c in checks) else "inconclusive"

    def draw(ax1, ax2):
        for p in order:
            x = r[(r.policy == p) & (r.lr == 0.1) & (r.seed == 0)]
            if not x.empty:
                m = read_table(x.iloc[0].path)
                ax1.plot(m.step, m.lr, label=p)
            ok = r[(r.policy == p) & (r.status == "complete")]
            mean = ok.groupby("lr").final_val_acc.mean()
            ax2.plot(mean.index, mean.values, "o-", label=p)
        ax1.set(xlabel="step", ylabel="LR (base 0.1)", title="the seven Caffe policies, T = 600 steps")
        ax1.set_yscale("log")
        ax2.set_xscale("log")
        ax2.set_xticks(sorted(r.lr.unique()), [f"{v:g}" for v in sorted(r.lr.unique())])
        ax2.minorticks_off()
        ax2.set(xlabel="base LR (log)", ylabel=f"final val acc (mean of {n_seeds} seeds; missing = diverged)",
                title="o2-small: MNIST MLP, SGD m=0.9, B=64")
        ax2.legend(fontsize=8)
    return "\n\n".join([md(tab), md(best), "\n".join(checks),
                        verdict(word, f"{noise_text(sigma, dof, n_img, top, n_seeds)}. Tied with the best: "
                                      f"{', '.join(tied)}; resolved gaps: "
                                      + (", ".join(f"{a} > {b}" for a, b in resolved) or "none") + "."),
                        ONE_B, figure("o2-policies.png", "O2: the seven policies' LR and final accuracy", draw)])


def o3_block() -> str:
    r = results("o3-small")
    r["schedule"] = [f"{n}" + (f" (lower = upper × {f:.3g})" if n == "cyclic" else "")
                     for n, f in zip(r["schedule.name"], r["schedule.min_lr_factor"])]
    tab = by_group_lr(r, "schedule")
    n_seeds = int(r.groupby(["schedule", "lr"]).size().max())
    best = best_per_group(r, "schedule")
    sigma, dof = pooled_seed_std(best_cells(r, "schedule", best), ["schedule", "lr"])
    d = band(sigma, n_seeds)
    best = best.rename(columns={"group": "schedule", "mean": "final val acc", "std": "seed std"}).drop(columns="n")
    s = suggestions("o3-small", names=("clr-upper", "clr-lower/3", "clr-lower/4", "valley"))
    s = s.rename(columns={"batch_size": "B"})
    const = best[best.schedule == "constant"].iloc[0]
    others = best[best.schedule != "constant"]
    gain = others["final val acc"].max() - const["final val acc"]
    checks = [_three_way(gain > d, gain < -d, f"best cyclic/SGDR beats the best constant LR: by {g(gain, 2)} accuracy "
                                              f"(band {g(d, 2)})"),
              (f"- range test (--val) bounds at B=64: upper {g(s['clr-upper'].iloc[0])}, "
               f"lower/3 {g(s['clr-lower/3'].iloc[0])}, lower/4 {g(s['clr-lower/4'].iloc[0])}; "
               f"the grid's best cyclic upper bound: {g(others[others.schedule.str.startswith('cyclic')]['best LR'].iloc[0])}")]
    word = "reproduced" if gain > d else "not reproduced" if gain < -d else "inconclusive"
    return "\n\n".join([md(tab), md(best), "Range-test suggestions (same setup, `--val`: accuracy after every step):", md(s),
                        "\n".join(checks),
                        verdict(word, noise_text(sigma, dof, val_images(r), const["final val acc"], n_seeds) + "."), ONE_B,
                        img(paths.runs / "o3-small" / "range_test" / "range_test.png", "o3-range_test.png", "O3: range test with validation accuracy")])


def o4_block() -> str:
    r = results("o4-small")
    opt = r["optimizer.name"]
    rows = [{"LR": g(lr), **{o: acc_cell(r[(r.lr == lr) & (opt == o)]) for o in ("sgd", "adam")}} for lr in sorted(r.lr.unique())]
    n_seeds = int(r.groupby(["optimizer.name", "lr"]).size().max())
    best = best_per_group(r, "optimizer.name")
    sigma, dof = pooled_seed_std(best_cells(r, "optimizer.name", best), ["optimizer.name", "lr"])
    d = band(sigma, n_seeds)
    best = best.rename(columns={"group": "optimizer", "mean": "final val acc", "std": "seed std"}).drop(columns="n")
    sgd, adam = (best[best.optimizer == o].iloc[0] for o in ("sgd", "adam"))
    a_def = r[(opt == "adam") & (np.isclose(r.lr, 1e-3))].final_val_acc.mean()
    s_sgd = suggestions("o4-small")
    s_adam = suggestions("o4-small", "range_test_adam")
    rt = pd.DataFrame([{"optimizer": "sgd", "grid best LR": g(sgd["best LR"]), **{k: g(v) for k, v in s_sgd.iloc[0].items() if k != "batch_size"}},
                       {"optimizer": "adam", "grid best LR": g(adam["best LR"]), **{k: g(v) for k, v in s_adam.iloc[0].items() if k != "batch_size"}}])
    diff = sgd["final val acc"] - adam["final val acc"]
    trained = lambda o, f: g(getattr(r[(opt == o) & (r.status == "complete")].lr, f)())  # noqa: E731
    checks = [_three_way(diff > d, diff < -d,
                         f"tuned SGD {g(sgd['final val acc'], 4)} (LR {g(sgd['best LR'])}) vs tuned Adam {g(adam['final val acc'], 4)} "
                         f"(LR {g(adam['best LR'])}): difference {g(diff, 2)} (band {g(d, 2)})"),
              _three_way(adam["final val acc"] - a_def < d, adam["final val acc"] - a_def > d,
                         f"Adam at its default LR 1e-3: {g(a_def, 4)}, {g(adam['final val acc'] - a_def, 2)} below tuned Adam "
                         f"(SGD at the same LR 1e-3: {g(r[(opt == 'sgd') & np.isclose(r.lr, 1e-3)].final_val_acc.mean(), 4)})"),
              f"- LRs that trained (no divergence): SGD {trained('sgd', 'min')}–{trained('sgd', 'max')}, "
              f"Adam {trained('adam', 'min')}–{trained('adam', 'max')}"]
    word = "partly reproduced" if checks[1].startswith("- ✅") and not checks[0].startswith("- ✅") else \
        "reproduced" if all(c.startswith("- ✅") for c in checks[:2]) else "not reproduced"
    return "\n\n".join([md(pd.DataFrame(rows)), md(best), "Range test on the same setup (B = 64, 100 steps):", md(rt), "\n".join(checks),
                        verdict(word, noise_text(sigma, dof, val_images(r), adam["final val acc"], n_seeds) + "."), ONE_B,
                        img(saved("o4-small").figure("metric_vs_lr", **{"optimizer.name": "adam"}), "o4-adam.png", "O4: Adam, final val acc against LR"),
                        img(saved("o4-small").figure("metric_vs_lr", **{"optimizer.name": "sgd"}), "o4-sgd.png", "O4: SGD, final val acc against LR")])
