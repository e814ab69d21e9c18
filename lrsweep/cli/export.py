"""`lrsweep export`: a sweep folder's runs for TensorBoard, or its step table as parquet/jsonl."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lrsweep.cli.choices import Choice
from lrsweep.cli.root import app, console, guarded, warn
from lrsweep.export import FORMATS

ExportFormat = Choice("ExportFormat", [(f, f) for f in FORMATS])


@app.command()
@guarded
def export(paths: Annotated[list[Path], typer.Argument(help="Sweep folder(s), or a folder of sweeps.")],
           tensorboard: Annotated[Optional[Path], typer.Option("--tensorboard", help="Write one TensorBoard run per grid cell under this folder (scalars and HParams; needs the `export` extra).")] = None,
           format_: Annotated[Optional[ExportFormat], typer.Option("--format", help="Write every run's step table with its config columns as this format (parquet needs the `parquet` extra).")] = None,
           out: Annotated[Optional[Path], typer.Option("--out", help="The --format file (default: <first path>/steps.<format>).")] = None):
    """Export finished runs: TensorBoard event files (--tensorboard DIR) and/or one table of every logged step (--format)."""
    from lrsweep.errors import ParameterError

    if out is not None and format_ is None:
        raise ParameterError("out", "names the table's file: give `format_` parquet|jsonl too")
    if tensorboard is None and format_ is None:
        raise ParameterError("tensorboard", "give a folder for TensorBoard runs, or `format_` parquet|jsonl for a table")
    if format_ is not None:
        from lrsweep.export.tables import write_steps

        target = out or Path(paths[0]) / f"steps.{format_.value}"
        rows, runs, warnings = write_steps(paths, target, format_.value)
        for w in warnings:
            warn(w)
        console.print(f"wrote {target}: {rows} rows from {runs} runs", highlight=False)
    if tensorboard is not None:
        from lrsweep.export.tensorboard import export_tensorboard

        folders, warnings = export_tensorboard(paths, tensorboard)
        for w in warnings if format_ is None else []:  # once is enough
            warn(w)
        console.print(f"wrote {len(folders)} TensorBoard runs under {tensorboard}; view them with: "
                      f"tensorboard --logdir {tensorboard}", highlight=False)
