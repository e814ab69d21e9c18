"""The `lrsweep` command. Commands only parse, call the library and print.

One module per command group (run: plan, run; summarize: summarize, predict; rangetest;
bench); root holds the app, --debug and the error handling, tables the printing.
"""
from lrsweep.cli.root import app

# Each module registers its commands on `app`; --help lists them in this order.
from lrsweep.cli import run  # noqa: F401
from lrsweep.cli import summarize  # noqa: F401
from lrsweep.cli import rangetest  # noqa: F401
from lrsweep.cli import bench  # noqa: F401
from lrsweep.cli import export  # noqa: F401

__all__ = ["app", "main"]


def main():
    app()


if __name__ == "__main__":
    main()
