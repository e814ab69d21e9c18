"""`lrsweep bench`: time one grid with a plain PyTorch loop and with lrsweep's engines."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lrsweep.cli.choices import BenchDevice
from lrsweep.cli.root import app, console, err_console, guarded
from lrsweep.cli.tables import print_frame


@app.command()
@guarded
def bench(quick: Annotated[bool, typer.Option("--quick", help="A smaller grid: B {32, 128} x 4 LRs, 2048 examples, 2000 test examples.")] = False,
          out: Annotated[Path, typer.Option("--out", help="Where to write the JSON report.")] = Path("bench.json"),
          data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder with MNIST/raw/ (default: $LRSWEEP_DATA, else ../shared/datasets, else generated data).")] = None,
          device: Annotated[BenchDevice, typer.Option("--device", help="Where the engines train.")] = BenchDevice.auto,
          variants: Annotated[Optional[str], typer.Option("--variants", help="Comma-separated subset of options,plain,sequential,vectorized,auto, or all (options: per member-step time of each engine option). Default: plain,sequential,vectorized,auto; with --quick all.")] = None):
    """Time one grid several ways: a plain PyTorch loop, the sequential and vectorized engines, and `lrsweep run`."""
    from lrsweep.benchmark import FULL, QUICK, Table, choose_variants, run_bench, summary

    report = run_bench(QUICK if quick else FULL, choose_variants(variants, quick), data_root, device.value, out,
                       log=lambda m: err_console.print(m, highlight=False, markup=False))
    for block in summary(report, out):
        if isinstance(block, Table):
            print_frame(block.frame, title=block.title)
        else:
            console.print(block, highlight=False)
