"""The fixed choices of the CLI's options, as Enums: typer checks them and `--help` lists them.

Every list is the library's own, from modules that import no torch (`lrsweep --help` should
not wait for it), except the executors' (execution/ imports the engines), which is spelled
out here and checked against execution.EXECUTORS by tests/test_cli.py.
"""
from __future__ import annotations

from enum import Enum

from lrsweep.analysis.fits import LAWS, RULES
from lrsweep.analysis.metrics import METRICS, RESULT_METRICS
from lrsweep.config.schema import ENGINES
from lrsweep.rangetest.ramp import MODES, SUGGESTIONS


class Choice(str, Enum):
    """A str Enum that prints as its value (an f-string gives `csv`, not `Format.csv`)."""

    def __str__(self) -> str:
        return self.value


def _of(name: str, values) -> type[Choice]:
    return Choice(name, [(v, v) for v in values])


Format = _of("Format", ("table", "csv", "json", "markdown"))
TableOrJson = _of("TableOrJson", ("table", "json"))
Metric = _of("Metric", METRICS)
ResultMetric = _of("ResultMetric", RESULT_METRICS)  # `run` ranks before any metrics.csv is read
Law = _of("Law", (*LAWS, *RULES))
Executor = _of("Executor", ("local", "ray"))  # execution.EXECUTORS
Engine = _of("Engine", ENGINES)  # the train.engine field
RampMode = _of("RampMode", MODES)
Suggestion = _of("Suggestion", SUGGESTIONS)
BenchDevice = _of("BenchDevice", ("auto", "cpu", "cuda"))
