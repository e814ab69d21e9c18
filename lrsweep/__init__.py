"""lrsweep: which learning rate goes with which batch size?

Library entry points: `grid.load_sweep` (YAML -> runs), `sweep.run_sweep` (train them),
`records.load_runs` (results -> DataFrame), `summary.best_lr_table`.
"""
__version__ = "0.1.0"
