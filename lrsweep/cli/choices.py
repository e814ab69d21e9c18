"""The fixed choices of the CLI's options, as Enums: typer checks them and `--help` lists them.

Lists the analysis owns are read from it (metrics, laws: cheap to import). The others are
spelled out here and checked against their library's list by tests/test_cli.py, because
their modules import torch or the config stack, and `lrsweep --help` should not wait for that.
"""
from __future__ import annotations

from enum import Enum

from lrsweep.analysis.fits import LAWS, RULES
from lrsweep.analysis.metrics import METRICS, RESULT_METRICS


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
Engine = _of("Engine", ("auto", "vectorized", "sequential"))  # the train.engine field
RampMode = _of("RampMode", ("exp", "linear"))  # rangetest.MODES
Suggestion = _of("Suggestion", ("valley", "steepest", "minimum/10", "clr-upper", "clr-lower/3", "clr-lower/4"))  # rangetest.SUGGESTIONS
