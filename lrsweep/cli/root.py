"""The `lrsweep` app itself: its --debug flag, the consoles, and how errors reach the user.

Not `cli/app.py`: `from lrsweep.cli import app` must give the Typer app, and a submodule of the
same name would be shadowed by it (`import lrsweep.cli.app` and monkeypatching would break).
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup, TyperOption

from lrsweep.errors import LrsweepWarning, ParameterError, UserError, shorten

LOG_WIDTH = 160  # columns of output that is not a terminal, unless COLUMNS says otherwise


def _width(stream) -> Optional[int]:
    """None on a terminal (rich asks it, and follows a resize); else $COLUMNS when set, else
    LOG_WIDTH: logs and CI are not terminals, and rich would wrap their tables at 80 columns."""
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):  # a closed or odd stream: a log
        pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else LOG_WIDTH


console = Console(width=_width(sys.stdout), emoji=False)  # `mod:x:` is not an emoji code
err_console = Console(stderr=True, width=_width(sys.stderr), emoji=False)


def fit_consoles() -> None:
    """Size the consoles again for this command: tests and embedding code swap sys.stdout and
    the environment (COLUMNS) after this module is imported."""
    console.width, err_console.width = _width(console.file), _width(err_console.file)


STATE = {"debug": False}
SHOWN_LIMIT = 2000  # characters of one error or warning line (library messages are far shorter)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: key=value (YAML value). Repeatable.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Put the sweep folder under this directory.")]

# How typer words a value outside an Enum's choices (click's Choice, and typer's own checks alike).
_NOT_ONE_OF = re.compile(r"(?P<value>'[^']*'|\"[^\"]*\") is not one of (?P<choices>.+?)\.?$")


def error(message: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(shorten(message, SHOWN_LIMIT))}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(shorten(message, SHOWN_LIMIT))}", highlight=False,
                      soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """The library's warnings (errors.LrsweepWarning) as one `warning:` line; others as Python shows them."""
    if issubclass(category, LrsweepWarning):
        warn(str(message))
    else:
        _default(message, category, filename, lineno, file, line)


class _Interrupts:
    """SIGINT while a command runs: the first is a KeyboardInterrupt (the command stops, saving
    what is finished); the next ones are only counted, so that the clean-up after the first
    (workers joined, the index rewritten) finishes, and ignored once it has, so that the
    interpreter's exit (multiprocessing's atexit joins) shows no traceback. The FORCE-th during
    the clean-up leaves at once (exit 130; files are written atomically, so even that leaves
    every finished run whole)."""
    FORCE = 5

    def __init__(self):
        self.count, self.previous = 0, None

    def __call__(self, signum, frame):
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        if self.count >= self.FORCE:
            os._exit(130)

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self)
        except ValueError:  # not the main thread (an embedding application): leave SIGINT alone
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            return
        # After a Ctrl-C the command is cleaned up and the process is ending: ignore SIGINT for
        # good (a Python handler would be reset to the default one while the interpreter exits).
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.count else self.previous)


class _Commands(TyperGroup):
    """Typer's group, with a bad choice reported like every other user error: one line,
    `--format: expected one of (table, csv), got 'xml'`, exit 2 (typer's own is a framed
    panel under the usage line)."""

    def parse_args(self, ctx, args):
        # `lrsweep plan x.yaml --debug` means the global flag too: move it before the command
        if "--debug" in args[1:] and args[0] != "--debug":
            args = ["--debug", *[a for a in args if a != "--debug"]]
        return super().parse_args(ctx, args)

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


def _option_type(self, ctx, _shown=TyperOption.display_type_rich):
    """The type --help shows after an option: none for an on/off flag, which takes no value
    (typer shows `<bool>` there, as if `--plots true` were how to write it)."""
    return None if getattr(self, "is_bool_flag", False) else _shown(self, ctx)


TyperOption.display_type_rich = _option_type

app = typer.Typer(cls=_Commands, help="Which learning rate goes with which batch size? Sweep, measure, fit.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("lrsweep")
        except PackageNotFoundError:  # run from a source tree that is not installed
            v = "unknown (not installed)"
        console.print(f"lrsweep {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (also after the command).")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print lrsweep's version and exit.")] = False):
    STATE["debug"] = debug
    fit_consoles()


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
        shown = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            with _Interrupts():
                return fn(*args, **kwargs)
        except UserError as e:
            if STATE["debug"]:
                raise
            if isinstance(e, ParameterError):
                e = e.with_flags({e.param: flag(e.param), **flags})
            error(str(e))
            raise typer.Exit(2)
        except OSError as e:  # the file system said no where no check expected it: still one line
            if STATE["debug"]:
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            error(f"{where}{e.strerror or e}")
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: finished runs are saved; run the same command again to continue")
            raise typer.Exit(130)
        finally:
            warnings.showwarning = shown
    return wrapper
