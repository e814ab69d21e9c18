"""The `lrsweep` app itself: its --debug flag, the consoles, and how errors reach the user.

Not `cli/app.py`: `from lrsweep.cli import app` must give the Typer app, and a submodule of the
same name would be shadowed by it (`import lrsweep.cli.app` and monkeypatching would break).
"""
from __future__ import annotations

import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from lrsweep.errors import ParameterError, UserError

# Logs and CI are not terminals: rich would wrap at 80 columns; give tables room instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
STATE = {"debug": False}

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key=value (YAML value). Repeatable.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Put the sweep folder under this directory.")]

# How typer words a value outside an Enum's choices (click's Choice, and typer's own checks alike).
_NOT_ONE_OF = re.compile(r"(?P<value>'[^']*'|\"[^\"]*\") is not one of (?P<choices>.+?)\.?$")


def error(message: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


class _Commands(TyperGroup):
    """Typer's group, with a bad choice reported like every other user error: one line,
    `--format: expected one of (table, csv), got 'xml'`, exit 2 (typer's own is a framed
    panel under the usage line)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:
            found = _NOT_ONE_OF.search(e.format_message())
            if e.param is None or not found:
                raise
            choices = ", ".join(c.strip().strip("'\"") for c in found["choices"].split(","))
            error(f"{max(e.param.opts, key=len)}: expected one of ({choices}), got {found['value']}")
            raise typer.Exit(2)


app = typer.Typer(cls=_Commands, help="Which learning rate goes with which batch size? Sweep, measure, fit.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False):
    STATE["debug"] = debug


def flag(param: str) -> str:
    """The flag of a parameter, by the convention every command follows: `min_lr` -> `--min-lr`
    (a trailing `_`, as in `format_`, only avoids a Python name)."""
    return "--" + param.rstrip("_").replace("_", "-")


def guarded(fn: Optional[Callable] = None, /, **renamed: str) -> Callable:
    """User errors -> one line on stderr, exit 2; Ctrl-C -> a note, exit 130. --debug shows the
    traceback.

    A ParameterError names library parameters (its subject, and others in `backticks`); they are
    shown as the command's flags. The library's name is the command's own parameter name, or
    else named here: `@guarded(batch_sizes="--batch-size")`. Plain `@guarded` otherwise.
    """
    if fn is None:
        return functools.partial(guarded, **renamed)
    flags = {**{p: flag(p) for p in inspect.signature(fn).parameters}, **renamed}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if STATE["debug"]:
                raise
            if isinstance(e, ParameterError):
                e = e.with_flags({e.param: flag(e.param), **flags})
            error(str(e))
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: finished runs are saved; run the same command again to continue")
            raise typer.Exit(130)
    return wrapper
