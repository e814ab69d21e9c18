"""The report's figures for one sweep (or one group of it). Inputs are the tables report.py
builds; nothing is computed here beyond what drawing needs (cell edges, colours)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter


def new_axes(figsize=(6.4, 4.4)) -> Axes:
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def save(ax: Axes, path: str | Path, dpi: int = 110) -> Path:
    ax.figure.savefig(path, dpi=dpi)
    return Path(path)


def _log(ax: Axes, which: str = "xy", base_x: int = 10) -> None:
    """Log scale on the axes whose plotted data has a positive value (a run too short for a
    statistic leaves only NaN, and matplotlib refuses to log-scale nothing)."""
    for name in which:
        data = [np.asarray(ln.get_xdata() if name == "x" else ln.get_ydata(), float) for ln in ax.lines]
        values = np.concatenate(data) if data else np.array([])
        if np.any(np.isfinite(values) & (values > 0)):
            if name == "x":
                ax.set_xscale("log", base=base_x)
            else:
                ax.set_yscale("log")


def _plain_ticks(ax: Axes, axes: str = "xy") -> None:
    """Log axes labelled 0.01, 30, 256 rather than 10^-2, 3x10^1: readable at a glance."""
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if axis.get_scale() == "log":
            lo, hi = ax.get_xlim() if name == "x" else ax.get_ylim()
            axis.set_major_formatter(fmt)
            # under ~1.5 decades there are too few major ticks to read values: label minors too
            axis.set_minor_formatter(fmt if hi / lo < 30 else NullFormatter())


def _colours(values) -> dict:
    """One colour per batch size, small B light to large B dark, for every figure alike."""
    values = sorted(values)
    cmap = colormaps["viridis"]
    return {v: cmap(0.85 * i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges at geometric midpoints: the grid is spaced in log LR."""
    if len(x) == 1:
        return np.array([x[0] / 2, x[0] * 2])
    mid = np.sqrt(x[1:] * x[:-1])
    return np.concatenate([[x[0] ** 2 / mid[0]], mid, [x[-1] ** 2 / mid[-1]]])


def heatmap(cells: pd.DataFrame, metric: str, higher: bool, best: Optional[pd.DataFrame] = None,
            ax: Optional[Axes] = None) -> Axes:
    """Metric over log-LR (x) x batch size (rows). cells: batch_size, lr, mean, and optional
    n, n_diverged, n_failed counts. Cells without a value (diverged, failed, target never reached)
    are hatched and labelled, cells never run dotted; `best` (batch_size, best_lr) gets a black frame."""
    ax = ax or new_axes((7.2, 0.55 * cells["batch_size"].nunique() + 2.2))
    sizes = sorted(cells["batch_size"].unique())
    finite = cells["mean"][np.isfinite(cells["mean"])]
    norm = Normalize(finite.min(), finite.max()) if len(finite) else Normalize(0, 1)
    cmap = colormaps["viridis" if higher else "viridis_r"]
    patches, colours = [], []
    annotate = len(cells) <= 120
    for row, B in enumerate(sizes):
        c = cells[cells["batch_size"] == B].sort_values("lr")
        lrs = c["lr"].to_numpy(float)
        edges = _edges(lrs)
        for j, r in enumerate(c.itertuples(index=False)):
            x0, x1 = edges[j], edges[j + 1]
            rect = Rectangle((x0, row - 0.5), x1 - x0, 1)
            ran = getattr(r, "n", 1) > 0  # NaN (a cell only the sweep file knows) is False
            if np.isfinite(r.mean):
                patches.append(rect)
                colours.append(r.mean)
                label = f"{r.mean:.3g}"
            elif ran:
                bad = "div" if getattr(r, "n_diverged", 0) else "fail" if getattr(r, "n_failed", 0) else "—"
                ax.add_patch(Rectangle((x0, row - 0.5), x1 - x0, 1, facecolor="0.85", hatch="xx",
                                       edgecolor="0.55", linewidth=0))
                label = bad
            else:
                ax.add_patch(Rectangle((x0, row - 0.5), x1 - x0, 1, fill=False, linestyle=":", edgecolor="0.5"))
                label = "not run"
            if annotate:
                mid = math.sqrt(x0 * x1)
                shade = cmap(norm(r.mean)) if np.isfinite(r.mean) else (1, 1, 1, 1)
                dark = sum(shade[:3]) < 1.5
                ax.text(mid, row, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    pc = PatchCollection(patches, cmap=cmap, norm=norm, linewidth=0)
    pc.set_array(np.asarray(colours, float))
    ax.add_collection(pc)
    if best is not None:
        for _, b in best.iterrows():
            if not np.isfinite(b["best_lr"]):
                continue
            row = sizes.index(b["batch_size"])
            lrs = np.sort(cells.loc[cells["batch_size"] == b["batch_size"], "lr"].to_numpy(float))
            e = _edges(lrs)
            j = int(np.argmin(np.abs(np.log(lrs / b["best_lr"]))))
            ax.add_patch(Rectangle((e[j], row - 0.5), e[j + 1] - e[j], 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xscale("log")
    all_edges = np.concatenate([_edges(np.sort(cells.loc[cells["batch_size"] == B, "lr"].to_numpy(float))) for B in sizes])
    ax.set_xlim(all_edges.min(), all_edges.max())
    ax.set_ylim(-0.5, len(sizes) - 0.5)
    ax.set_yticks(range(len(sizes)), [str(int(B)) if float(B).is_integer() else str(B) for B in sizes])
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("batch size B (examples)")
    ax.figure.colorbar(pc, ax=ax, label=metric + (" (higher is better)" if higher else " (lower is better)"))
    ax.set_title(f"{metric} per cell; black frame = best LR per batch size")
    _plain_ticks(ax)
    return ax


def optimal_lr(points: pd.DataFrame, curves: dict[str, tuple[np.ndarray, np.ndarray]],
               ax: Optional[Axes] = None) -> Axes:
    """Optimal LR vs batch size, log-log. points: batch_size, lr_opt, bracketed (else edge: '' or low/high);
    curves: label -> (B, LR) arrays of each fitted law, best first (drawn solid, the rest dashed)."""
    ax = ax or new_axes()
    for i, (label, (B, lr)) in enumerate(curves.items()):
        ax.plot(B, lr, "-" if i == 0 else "--", linewidth=2 if i == 0 else 1, label=label, zorder=2)
    fitted = points["bracketed"].astype(bool) if "bracketed" in points else points["edge"] == ""
    ok, edge = points[fitted], points[~fitted]
    ax.plot(ok["batch_size"], ok["lr_opt"], "o", color="black", label="measured optimum", zorder=3)
    if len(edge):
        ax.plot(edge["batch_size"], edge["lr_opt"], "^", mfc="none", color="red", zorder=3,
                label="not bracketed: grid edge or next to an LR that did not train (not fitted)")
    _log(ax, "xy", base_x=2)
    ax.set_xlabel("batch size B (examples, log scale)")
    ax.set_ylabel("optimal learning rate (log scale)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("optimal LR vs batch size, with fitted laws")
    _plain_ticks(ax)
    return ax


def metric_vs_lr(cells: pd.DataFrame, metric: str, logy: bool = False, ax: Optional[Axes] = None) -> Axes:
    """One line per batch size: seed-mean metric vs LR with ±std error bars; diverged and
    failed cells (mean ±inf) leave a gap and are marked x on the axis. `logy` for losses."""
    ax = ax or new_axes()
    col = _colours(cells["batch_size"].unique())
    for B, c in cells.groupby("batch_size"):
        c = c.sort_values("lr")
        y = c["mean"].where(np.isfinite(c["mean"]))
        ax.errorbar(c["lr"], y, yerr=c["std"].where(np.isfinite(c["mean"])), marker="o", ms=4,
                    capsize=3, color=col[B], label=f"B={B:g}")
        bad = c[~np.isfinite(c["mean"])]
        if len(bad):
            ax.plot(bad["lr"], np.full(len(bad), np.nan), alpha=0)  # keep the x range
            ax.plot(bad["lr"], [0.02] * len(bad), "x", color=col[B], transform=ax.get_xaxis_transform())
    _log(ax, "xy" if logy else "x")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"{metric} (mean ± std over seeds{', log scale' if logy else ''})")
    ax.legend(fontsize=8, title="x on the axis: diverged/failed", title_fontsize=7)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{metric} vs learning rate")
    _plain_ticks(ax)
    return ax


def loss_curves(curves: dict[float, pd.DataFrame], x: str = "step", ax: Optional[Axes] = None) -> Axes:
    """Train loss of each batch size's best run vs `x` (step or examples): raw per-step loss
    faint, the smoothed loss the targets are judged on solid. curves: B -> DataFrame with
    step, examples, train_loss, smoothed, lr."""
    ax = ax or new_axes()
    col = _colours(curves)
    for B, m in sorted(curves.items()):
        ax.plot(m[x], m["train_loss"], color=col[B], alpha=0.25, linewidth=0.6)
        ax.plot(m[x], m["smoothed"], color=col[B], linewidth=1.6, label=f"B={B:g}, lr={m['lr'].iloc[0]:.3g}")
    _log(ax, "xy")
    ax.set_xlabel({"step": "optimizer steps (log scale)", "examples": "training examples seen (log scale)"}[x])
    ax.set_ylabel("train loss (log scale)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"best run per batch size: loss vs {x}")
    _plain_ticks(ax)
    return ax


def _per_batch(stats: pd.DataFrame, value: str, ylabel: str, title: str, ax: Optional[Axes]) -> Axes:
    """value vs batch size: thin line per LR (fixed-LR comparison), black for the best LR per B."""
    ax = ax or new_axes()
    lrs = sorted(stats["lr"].unique())
    cmap = colormaps["plasma"]
    for i, lr in enumerate(lrs):
        s = stats[stats["lr"] == lr].sort_values("batch_size")
        ax.plot(s["batch_size"], s[value], "-", marker=".", linewidth=0.8, alpha=0.6,
                color=cmap(0.9 * i / max(len(lrs) - 1, 1)), label=f"lr={lr:.3g}")
    best = stats[stats["is_best"]].sort_values("batch_size")
    ax.plot(best["batch_size"], best[value], "o-", color="black", linewidth=2, label="best LR per B")
    _log(ax, "xy", base_x=2)
    ax.set_xlabel("batch size B (examples, log scale)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    _plain_ticks(ax)
    return ax


def oscillation(stats: pd.DataFrame, ax: Optional[Axes] = None) -> Axes:
    """Per-step loss oscillation vs B (document 001). stats: batch_size, lr, oscillation, is_best."""
    return _per_batch(stats, "oscillation", "std of step loss around its moving average",
                      "per-step loss oscillation vs batch size", ax)


def grad_norm(stats: pd.DataFrame, ax: Optional[Axes] = None) -> Axes:
    """Mean global gradient norm vs B (document 004). stats: batch_size, lr, grad_norm_mean, is_best."""
    return _per_batch(stats, "grad_norm_mean", "mean gradient norm ‖g‖ (log scale)",
                      "mean gradient norm vs batch size", ax)


def critical_batch(points: dict[float, pd.DataFrame], fits: dict[float, dict],
                   hyperbolas: dict[float, tuple[np.ndarray, np.ndarray]], ax: Optional[Axes] = None) -> Axes:
    """Steps S vs examples E to reach each train-loss target (one colour per target), with the
    fitted hyperbola (S/S_min − 1)(E/E_min − 1) = 1. points: target -> batch_size, S, E (and
    S_lo, S_hi: error bars); fits: target -> B_noise (B_noise_lo, B_noise_hi: in the legend), ..."""
    ax = ax or new_axes()
    cmap = colormaps["tab10"]
    for i, (t, p) in enumerate(sorted(points.items(), reverse=True)):
        c = cmap(i % 10)
        f = fits.get(t, {})
        bn, lo, hi = (f.get(k, math.nan) for k in ("B_noise", "B_noise_lo", "B_noise_hi"))
        span = f" [{lo:.3g}–{hi:.3g}]" if np.isfinite([lo, hi]).all() else ""
        label = f"loss ≤ {t:g}" + (f": B_noise ≈ {bn:.3g}{span}" if np.isfinite(bn) else "")
        ax.plot(p["E"], p["S"], "o", color=c, label=label)
        if {"S_lo", "S_hi"} <= set(p.columns) and np.isfinite(p[["S_lo", "S_hi"]].to_numpy(float)).any():
            err = np.clip([p["S"] - p["S_lo"], p["S_hi"] - p["S"]], 0, None)  # 90% interval of each S
            ax.errorbar(p["E"], p["S"], yerr=np.nan_to_num(err), fmt="none", ecolor=c, elinewidth=1)
        for _, r in p.iterrows():
            ax.annotate(f"{r['batch_size']:g}", (r["E"], r["S"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if t in hyperbolas:
            S, E = hyperbolas[t]
            ax.plot(E, S, "-", color=c, linewidth=1)
            ax.plot([f["E_min"]], [f["S_min"]], "+", color=c, ms=10)
    _log(ax, "xy")
    ax.set_xlabel("examples E to reach the target (log scale)")
    ax.set_ylabel("optimizer steps S to reach the target (log scale)")
    ax.legend(fontsize=8, title="points labelled with B; + = (E_min, S_min)", title_fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("steps vs examples at the best LR per batch size")
    _plain_ticks(ax)
    return ax
