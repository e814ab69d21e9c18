"""`lrsweep range-test`: ramp the LR once per batch size and suggest LRs for a sweep."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lrsweep.cli.choices import RampMode, Suggestion, TableOrJson
from lrsweep.cli.root import SetOpt, app, console, err_console, guarded, warn
from lrsweep.cli.tables import print_frame


@app.command("range-test")
@guarded(batch_sizes="--batch-size")
def range_test(config: Annotated[Path, typer.Argument(help="Sweep YAML file: its base config is tested.")],
               batch_size: Annotated[Optional[list[int]], typer.Option("--batch-size", help="Repeatable. Default: the sweep's batch sizes.")] = None,
               min_lr: Annotated[float, typer.Option("--min-lr", help="First LR of the ramp.")] = 1e-7,
               max_lr: Annotated[float, typer.Option("--max-lr", help="Last LR of the ramp.")] = 10.0,
               steps: Annotated[Optional[int], typer.Option("--steps", help="Ramp length in steps (default 100).")] = None,
               epochs: Annotated[Optional[float], typer.Option("--epochs", help="Ramp length in epochs instead.")] = None,
               mode: Annotated[RampMode, typer.Option("--mode", help="How the LR ramps.")] = RampMode.exp,
               val: Annotated[bool, typer.Option("--val", help="Validation loss and accuracy after every step (slower).")] = False,
               smooth: Annotated[float, typer.Option("--smooth", help="EMA factor of the smoothed loss.")] = 0.98,
               diverge: Annotated[float, typer.Option("--diverge", help="Stop when smoothed loss > this x best.")] = 4.0,
               suggest: Annotated[Suggestion, typer.Option("--suggest", help="Suggestion listed first and used for the sweep.")] = Suggestion.valley,
               emit_sweep: Annotated[Optional[Path], typer.Option("--emit-sweep", help="Write a sweep YAML with LRs centred on the suggestions.")] = None,
               out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/<name>/range_test).")] = None,
               format_: Annotated[TableOrJson, typer.Option("--format", help="How to print the suggestions.")] = TableOrJson.table,
               set_: SetOpt = None):
    """LR range test: ramp the LR, record the loss, suggest LRs (one curve per batch size)."""
    from rich.progress import Progress

    from lrsweep.rangetest import check_outputs, emit_sweep as write_sweep, load_base, run_range_test, save

    base, sizes, raw, ignored = load_base(config, set_ or [])
    out = out or Path("runs") / base.name / "range_test"
    check_outputs(out, emit_sweep)  # before training: a read-only disk is said now, not after the test
    progress = Progress(console=err_console, transient=True, disable=not err_console.is_terminal)
    tasks: dict = {}

    def on_event(event, **info):
        b = info["batch_size"]
        if event == "start":
            tasks[b] = progress.add_task(f"B={b}", total=info["steps"])
        elif event == "step":
            progress.update(tasks[b], completed=info["step"], description=f"B={b} lr {info['lr']:.2g} loss {info['loss']:.3g}")

    with progress:
        test = run_range_test(base, batch_size or sizes, min_lr=min_lr, max_lr=max_lr, steps=steps, epochs=epochs,
                              mode=mode.value, val=val, smooth=smooth, diverge=diverge, suggest_name=suggest.value,
                              on_event=on_event)
    paths = save(test, out)
    if emit_sweep:
        write_sweep(raw, test, emit_sweep)
    if format_ == TableOrJson.json:
        sys.stdout.write(paths["json"].read_text())
        _warn_min_lr(test)
        return
    if ignored:
        console.print(f"note: the test uses the base config; sweep axes {', '.join(ignored)} are ignored")
    print_frame(test.suggestion_table(), title=f"{test.name}: LR suggestions ({suggest} first)")
    table = test.scaling_table()
    if len(table) == 1:
        table = table.drop(columns=[c for c in table.columns[2:] if c not in ("steps", "stopped at lr")])
    print_frame(table, title=f"'{suggest}' per batch size" + (" vs scaling from the smallest; measured lr ∝ B^k" if len(table) > 1 else ""))
    console.print(f"wrote {paths['csv'].parent}/: {', '.join(p.name for p in paths.values())}", highlight=False)
    if emit_sweep:
        console.print(f"wrote {emit_sweep}: check it with `lrsweep plan {emit_sweep}`", highlight=False)
    _warn_min_lr(test)


def _warn_min_lr(test) -> None:
    """A warning per batch size whose chosen suggestion depends on --min-lr (suggest.min_lr_check)."""
    for b, found in sorted(test.suggestions.items()):
        if found[test.suggest].warning:
            warn(f"B={b}: {found[test.suggest].warning}")
