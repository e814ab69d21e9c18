"""O12 (document 004): the mean gradient norm against B, and the final loss at fixed LRs against
the matched LR-per-B table. One seed: a final validation loss is judged against its own wobble
over the run's last evaluations (how much the number depends on the epoch the run stopped at)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lrsweep.analysis.runs import read_table

from repro.common import check, g, img, md, results, saved, suggestions, unresolved, verdict

MATCHED = {1: 0.05, 2: 0.1, 4: 0.2, 8: 0.5, 16: 1.0, 32: 1.5, 64: 2.0, 128: 4.0}  # document 004's table
FIXED = (0.05, 0.5)
TAIL = 10  # evaluations (epochs) the noise of a final loss is measured over


def o12_block() -> str:
    r = results("o12-small")
    runs = {(int(x.batch_size), float(x.lr)): x for _, x in r.iterrows()}
    done = lambda k: runs[k].status == "complete"  # noqa: E731
    gn = {k: float(read_table(x.path).grad_norm.mean()) for k, x in runs.items()}
    val = {k: (x.final_val_loss if done(k) else math.inf) for k, x in runs.items()}
    wobble = {}
    for k, x in runs.items():
        e = read_table(x.path, "evals")
        wobble[k] = float(e.val_loss.iloc[-TAIL:].std()) if done(k) and len(e) >= 3 else math.nan
    vtxt = lambda k: g(val[k], 4) if math.isfinite(val[k]) else "diverged"  # noqa: E731
    Bs = list(MATCHED)
    rows = []
    sug = suggestions("o12-small").set_index("batch_size")
    for b, lr in MATCHED.items():
        rows.append({"B": b, "matched LR": g(lr), "val loss, matched": vtxt((b, lr)),
                     **{f"val loss, LR {g(f)}": vtxt((b, f)) for f in FIXED},
                     f"± (std of the last {TAIL} evals, matched)": g(wobble[(b, lr)], 2),
                     **{f"mean grad norm at LR {g(f)}": g(gn[(b, f)], 3) + ("" if done((b, f)) else " (diverged)") for f in FIXED},
                     "range test: valley": g(sug.loc[b, "valley"]) if b in sug.index else "—",
                     "minimum/10": g(sug.loc[b, "minimum/10"]) if b in sug.index else "—"})
    arms = {"matched": [(b, MATCHED[b]) for b in Bs], **{f"LR {g(f)}": [(b, f) for b in Bs] for f in FIXED}}
    noise = float(np.nanmedian([wobble[k] for ks in arms.values() for k in ks]))

    def rho(keys, values):
        """Spearman's ρ against log B over the runs that completed (a diverged run's numbers are
        those of its blow-up, not of its batch size), and which were left out."""
        ok = [k for k in keys if done(k)]
        out = [k[0] for k in keys if not done(k)]
        v = pd.Series([values[k] for k in ok]).corr(pd.Series(np.log([k[0] for k in ok])), method="spearman")
        return v, out

    def left_out(out):
        return f"; left out (diverged): B={', '.join(map(str, out))}" if out else ""
    checks = []
    for f in FIXED:
        v, out = rho(arms[f"LR {g(f)}"], gn)
        checks.append(check(v < -0.8, f"mean gradient norm falls with B at LR {g(f)}: Spearman ρ vs log B = {g(v, 2)}{left_out(out)}"))
    spreads, tail = {}, {}  # tail: without B = 1, where a fixed LR is furthest from the matched one
    for name, keys in arms.items():
        ok = [val[k] for k in keys if done(k)]
        rest = [val[k] for k in keys if done(k) and k[0] > 1]
        spreads[name] = max(ok) - min(ok) if ok else math.nan
        tail[name] = max(rest) - min(rest) if rest else math.nan
    step = 2 * math.sqrt(2) * noise  # two final losses differ beyond their noise
    for f in FIXED:
        keys = arms[f"LR {g(f)}"]
        v, out = rho(keys, val)
        ok = [k for k in keys if done(k)]
        rise = val[ok[-1]] - val[ok[0]]
        # a rise: resolved from the first B to the last, and no resolved fall between neighbours
        falls = [(a[0], b[0]) for a, b in zip(ok, ok[1:]) if val[a] - val[b] > step]
        text = (f"at fixed LR {g(f)} the final val loss rises with B: {g(val[ok[0]], 4)} at B={ok[0][0]} → "
                f"{g(val[ok[-1]], 4)} at B={ok[-1][0]} (rise {g(rise, 2)}; two losses differ beyond their noise above "
                f"{g(step, 2)}; ρ = {g(v, 2)})" + (f"; resolved falls: {', '.join(f'B={a}→{b}' for a, b in falls)}" if falls else "")
                + left_out(out))
        checks.append(check(True, text) if rise > step and not falls else
                      check(False, text) if rise < -step else unresolved(text + " — not resolved"))
    # an arm with a diverged run is not flat, whatever its other runs do
    flat = {n: s <= 2 * noise and all(done(k) for k in arms[n]) for n, s in spreads.items()}
    checks.append(check(flat["matched"] and not all(flat.values()),
                        "the matched table keeps the loss flat (spread within 2× the noise) where a fixed LR does not: spreads "
                        + ", ".join(f"{n} {g(s, 2)}{' (flat)' if flat[n] else ''}" for n, s in spreads.items())
                        + "; without B=1: " + ", ".join(f"{n} {g(s, 2)}" for n, s in tail.items())
                        + f"; noise (median std of a run's last {TAIL} val losses) {g(noise, 2)}"))
    flat_fixed = [n for n in spreads if n != "matched" and (flat[n] or tail[n] <= 2 * noise)]
    text = (f"one seed; a final loss is uncertain by about {g(noise, 2)} (the median std of a run's last {TAIL} evaluations), "
            f"so differences in the third decimal are noise. The matched table is {'flat' if flat['matched'] else 'not flat'} "
            f"(spread {g(spreads['matched'], 2)})"
            + (f", but so is the fixed {', '.join(flat_fixed)} arm (from B=2 on: spread "
               f"{', '.join(g(tail[n], 2) for n in flat_fixed)}): flatness does not single out the matched table here; only "
               f"a fixed LR too small for large B ({', '.join(n for n in spreads if n != 'matched' and n not in flat_fixed) or 'none'}) rises"
               if flat_fixed else ", and every fixed-LR arm is not") + ".")
    word = "partly reproduced"
    return "\n\n".join([md(pd.DataFrame(rows)), "\n".join(checks), verdict(word, text),
                        img(saved("o12-small").figure("grad_norm"), "o12-grad_norm.png", "O12: mean gradient norm against B per LR"),
                        img(saved("o12-small").figure("metric_vs_lr"), "o12-val_loss_vs_lr.png", "O12: final val loss against LR per B")])
