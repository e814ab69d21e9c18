"""Sweep folders as lrsweep writes them, from numbers made up by a test instead of training."""
from __future__ import annotations

from lrsweep import storage
from lrsweep.config.grid import build_sweep


def record(spec, **fields) -> dict:
    """A result.json for grid cell `spec`: the record type's required fields (results.RunResult;
    a result.json without them is not a finished run) from its config, then `fields`."""
    c = spec.config
    return {"run_id": spec.run_id, "status": "complete", "error": None, "axes": spec.axes,
            "optimizer": c.optimizer.name, "schedule": c.schedule.name, "model": c.model.label,
            "dataset": c.dataset.name, "seed": c.train.seed, "batch_size": c.train.batch_size,
            "nominal_lr": c.optimizer.lr, "lr": c.effective_lr, **fields}


def write_sweep_dir(root, name: str, raw: dict, run):
    """root/name with the sweep file of `raw` and one finished run folder per run of its grid.
    `run(config)` -> (metrics columns, result.json fields) for that run's RunConfig; run_id,
    axes and a one-row evals.csv at the last logged step are filled in here."""
    spec = build_sweep(raw)
    d = root / name
    d.mkdir(parents=True)
    storage.write_sweep_file(d, spec.raw)
    for r in spec.runs:
        metrics, result = run(r.config)
        storage.write_run(d, r.run_id, r.config.model_dump(mode="json"), metrics, {"step": [int(metrics["step"][-1])]},
                          record(r, **result))
    return d
