"""lrsweep: which learning rate goes with which batch size?

The Python API (lrsweep/api.py), imported on first use so that `import lrsweep` stays cheap:

    lrsweep.load_sweep(path_or_dict, overrides=None, model=None)  -> Sweep (the grid)
    lrsweep.run(sweep, out="runs", callback=None, workers=1, ...)  -> SweepOutcome
    lrsweep.runs_frame(paths)   -> DataFrame, one row per run, config fields as dotted columns
    lrsweep.steps_frame(paths)  -> DataFrame, one row per logged step of every run
    lrsweep.summarize(paths, metric="final_val_acc", targets=None, ...)  -> Report
    lrsweep.write_report(report, out_dir)  -> the report/ folder's files

Underneath: `config.grid` (YAML -> runs), `sweep.run_sweep` (train them), `analysis.runs.load_runs`
(results -> DataFrame), `analysis.report.build_report` (best LR, fits, critical batch size),
`output.files.write_report` (the report/ folder), `export` (TensorBoard, parquet, jsonl).
"""
__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    **dict.fromkeys(("load_sweep", "run", "runs_frame", "steps_frame", "summarize", "write_report"), "lrsweep.api"),
    "Sweep": "lrsweep.config.grid", "SweepOutcome": "lrsweep.sweep", "Report": "lrsweep.analysis.report",
    "Group": "lrsweep.analysis.report", "UserError": "lrsweep.errors", "ConfigError": "lrsweep.errors",
    "ParameterError": "lrsweep.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrsweep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})
