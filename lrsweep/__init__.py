"""lrsweep: which learning rate goes with which batch size?

Library entry points: `config.grid.load_sweep` (YAML -> runs), `sweep.run_sweep` (train them),
`analysis.runs.load_runs` (results -> DataFrame), `analysis.report.build_report` (best LR, fits,
critical batch size), `output.files.write_report` (the report/ folder).
"""
__version__ = "0.1.0"
