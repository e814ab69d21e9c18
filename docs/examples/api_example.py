"""lrsweep's Python API, end to end: a sweep as a dict, trained into a temporary folder with a
progress callback, loaded as a DataFrame, summarized into the report the CLI prints.

    python docs/examples/api_example.py           # about 10 seconds on a laptop CPU

tests/test_api.py runs this file, so it stays working.
"""
import tempfile

import lrsweep
from lrsweep.events import RunFinished, SweepStarted

SWEEP = {
    "name": "api-example",
    # Generated data (no download): 4 classes of 8x8 "images" around random class means.
    "dataset": {"name": "synthetic", "synthetic": {"n_train": 512, "n_val": 256, "classes": 4, "shape": [1, 8, 8], "noise": 3.0}},
    "model": {"name": "mlp", "hidden": [32]},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "train": {"steps": 40, "eval_every": 20, "target_train_loss": 0.5, "device": "cpu", "seed": 0},
    "sweep": {"batch_size": [8, 32, 128, 512], "lr": {"logspace": [0.001, 1.0, 7]}},
}


def progress(event):
    """The callback gets lrsweep.events dataclasses; here, one line per finished run."""
    if isinstance(event, SweepStarted):
        print(f"{event.pending} runs to train ({event.done} already finished)")
    elif isinstance(event, RunFinished):
        r = event.result  # the run's result.json; a failed run has no losses
        loss = r.get("final_val_loss")
        print(f"  B={event.axes['batch_size']:<3} lr={event.axes['lr']:<7.3g} {r['status']:<9} "
              f"val_loss={float('nan') if loss is None else loss:.3f}")


def main(out: str) -> None:
    sweep = lrsweep.load_sweep(SWEEP, overrides=["train.eval_every=10"])  # overrides: like --set
    print(f"{sweep.name}: {len(sweep.runs)} runs over {', '.join(sweep.axis_names)}")
    outcome = lrsweep.run(sweep, out=out, callback=progress)  # workers=1: in this process
    print(f"trained into {outcome.sweep_dir}: {outcome.counts}")

    runs = lrsweep.runs_frame(outcome.sweep_dir)  # one row per run, config fields as columns
    print(f"runs_frame: {len(runs)} rows x {runs.shape[1]} columns; the 3 best:")
    print(runs.nsmallest(3, "final_val_loss")[["batch_size", "lr", "optimizer.momentum", "train.steps",
                                                 "final_val_loss"]].to_string(index=False))
    steps = lrsweep.steps_frame(outcome.sweep_dir)  # one row per logged step of every run
    curves = [c for c in steps.columns if c.startswith(("train_", "val_"))]
    print(f"steps_frame: {len(steps)} rows ({', '.join(curves)}, ...)")

    report = lrsweep.summarize(outcome.sweep_dir, metric="final_val_loss")
    best = report.table("best")
    print(best[["batch_size", "best_lr", "lr_opt", "final_val_loss"]].to_string(index=False))
    fits = report.table("fits")
    if not fits.empty:
        top = fits.iloc[0]
        print(f"best-fitting law: {top['law']} {top['params']}")
    critical = report.table("critical")
    if not critical.empty:
        print(critical[["target", "B_noise", "S_min"]].to_string(index=False))
    for warning in report.warnings + [w for g in report.groups for w in g.warnings]:
        print("note:", warning)
    files = lrsweep.write_report(report, outcome.sweep_dir / "report", with_plots=False)
    print(f"wrote {len(files)} report files, e.g. {files[-1]}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(tmp)
