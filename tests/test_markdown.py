"""The one formatter of numbers and tables (report.md, `--format markdown`, docs/reproduce.py)."""
import math

import numpy as np
import pandas as pd
import pytest

from lrsweep.output import markdown


@pytest.mark.parametrize("value, digits, text", [
    (0.123456, 3, "0.123"), (0.123456, 4, "0.1235"), (np.float32(0.5), 3, "0.5"), (1234.5, 3, "1.23e+03"),
    (math.nan, 3, "—"), (math.inf, 3, "—"), (-math.inf, 4, "—"), (None, 3, "—"),
    (7, 3, "7"), (123456, 3, "123456"), ("high", 3, "high"), ("", 3, ""), (True, 3, "True"), ((0.9, 0.999), 3, "(0.9, 0.999)"),
])
def test_cell(value, digits, text):
    assert markdown.cell(value, digits) == text


def test_table_is_github_markdown_with_every_value_through_cell():
    df = pd.DataFrame({"B": [16, 32], "best LR": [0.0123456, math.nan], "edge": ["", "high"]})
    assert markdown.table(df) == "\n".join([
        "| B | best LR | edge |",
        "|---|---|---|",
        "| 16 | 0.0123 |  |",
        "| 32 | — | high |",
    ])
    assert markdown.table(df, digits=4).splitlines()[2] == "| 16 | 0.01235 |  |"


def test_params_on_one_line():
    assert markdown.params({"eps_max": 0.012345, "B_noise": 64.0, "alpha": math.nan}) == "eps_max=0.0123, B_noise=64, alpha=—"
