"""What the CLI prints: the progress line at 80 columns, the hint after a long list of failed segments."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from manymodels.cli import render


def test_the_progress_line_fits_80_columns_without_cutting_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(width=80, record=True, force_terminal=False, file=io.StringIO())
    monkeypatch.setattr(render, "err", console)
    with render.segment_progress("train demand") as hooks:
        hooks["on_start"](123_456, "0123456789abcdef0123456789abcdef")
        for _ in range(100):
            hooks["on_progress"](1_000)
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    (line,) = lines
    assert len(line) <= 80 and "…" not in line
    assert "100000/123456" in line and "train demand (01234567)" in line


def test_the_long_failed_list_names_the_run_to_show(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(width=120, record=True, file=io.StringIO())
    monkeypatch.setattr(render, "out", console)
    manifest = pd.DataFrame({"segment": [f"s{i}" for i in range(12)], "segment_index": range(12),
                             "status": ["failed"] * 12, "rows": [3] * 12, "error": ["too few rows"] * 12})
    render.failed_segments(manifest, "feedbeef" * 4)
    text = console.export_text()
    assert "… and 2 more (manymodels show feedbeeffeedbeeffeedbeeffeedbeef --json lists them all)" in text
    assert "RUN_ID" not in text
