"""The HTML report as a person opens it: in a real headless Chromium, from a training, an evaluation and a promotion."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import manymodels as mm
from helpers import open_page, segment_frame, write_bundle
from manymodels.cli.main import app

runner = CliRunner()
HOSTILE = "<img src=x onerror=alert(1)>"  # a segment value that must show as text, never run


def _model() -> dict[str, Any]:
    return {
        "dataset": "train", "segment_by": ["segment"], "label": "label", "features": ["f0", "f1", "f2"],
        "split": {"test_size": 0.25, "seed": 7}, "metric": "rmse", "min_rows": 20,
        "validation": {"kind": "kfold", "folds": 3, "seed": 1},
        "candidates": [
            {"name": "lgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 5}},
            {"name": "mean", "type": "baseline", "method": "mean"},
        ],
    }


def _cli(path: Path, *args: str) -> str:
    result = runner.invoke(app, ["--bundle", str(path), *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Week one trained, evaluated and promoted; week two (some segments' rows changed) trained and evaluated."""
    root = tmp_path_factory.mktemp("report")
    names = [f"seg_{i:02d}" for i in range(8)] + [HOSTILE, "thin"]
    frame = segment_frame(names=names, rows=60)
    frame = frame[(frame["segment"] != "thin") | (frame.groupby("segment").cumcount() < 5)]  # fails min_rows
    frame = frame[(frame["segment"] != "seg_07") | (frame.groupby("segment").cumcount() < 40)]  # sizes differ
    path = write_bundle(root, frame=frame, models={"demand": _model()})
    _cli(path, "train", "demand", "--workers", "1")
    _cli(path, "evaluate", "demand")
    _cli(path, "promote", "demand")
    rng = np.random.default_rng(5)
    noisy = frame["segment"].isin(["seg_01", "seg_02", "seg_03"])
    frame.loc[noisy, "label"] += rng.normal(scale=8.0, size=int(noisy.sum()))
    frame.to_parquet(root / "data" / "train.parquet", index=False)
    _cli(path, "train", "demand", "--workers", "1")
    _cli(path, "evaluate", "demand")
    project = mm.load_bundle(path)
    runs = project.runs("demand")
    page = root / "page.html"
    output = _cli(path, "report", "demand", "--run", runs[0].run_id, "--out", str(page))
    assert f"training report of demand, run {runs[0].run_id}, 1 evaluation(s)" in output
    return {"path": path, "project": project, "page": page, "runs": [r.run_id for r in runs]}


def test_the_report_renders_in_chromium_with_its_charts_and_worst_segments(fleet: dict[str, Any], browser: Any) -> None:
    page, problems = open_page(browser, fleet["page"])
    try:
        plots = page.locator(".js-plotly-plot")
        # fleet: histogram, ECDF, metric vs rows; failures: by reason; selection: won, fold spread, gain over the
        # baseline; evaluation: by status, by decision, challenger vs champion, relative change
        assert plots.count() == 11
        for i in range(plots.count()):
            plot = plots.nth(i)
            assert plot.locator("g.trace").count() >= 1, f"chart {i + 1} drew nothing"
            pixels = np.asarray(Image.open(io.BytesIO(plot.screenshot())).convert("L"), dtype=float)
            assert pixels.std() > 10, f"chart {i + 1} is blank"
        assert problems == []

        manifest = fleet["project"].manifest("demand", fleet["runs"][0])
        ok = manifest[manifest["status"] == "ok"]
        expected = ok.sort_values(["rmse", "segment_index"], ascending=[False, True])["segment"].tolist()
        shown = page.locator("table.worst tbody tr td:first-child").all_inner_texts()
        assert shown == expected  # every ok segment, worst first, the hostile name as plain text
        assert HOSTILE in shown

        page.locator("table.worst tbody tr").first.get_by_role("link").click()
        target = page.evaluate("location.hash")
        assert target.startswith("#manifest-")
        assert page.locator(f"tr{target} td").first.inner_text() == expected[0]

        failures = page.locator("table.failures tbody tr").all_inner_texts()
        assert len(failures) == 1 and "thin" in failures[0] and "min_rows is N" in failures[0]
        assert "Segments won, by candidate" in page.inner_text("#selection")
        evaluation = page.locator("table.evaluation tbody tr td:nth-child(2)").all_inner_texts()
        table = pd.DataFrame({"status": evaluation})
        order = ["lost", "failed", "won", "new", "insufficient", "tied", "no_data", "absent"]
        assert table["status"].map(order.index).is_monotonic_increasing  # losses first: what needs a look
        assert problems == []
    finally:
        page.close()


def test_every_run_logs_its_page(fleet: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(fleet["project"].tracking_uri)
    latest, first = fleet["runs"]
    assert "report.html" in {a.path for a in client.list_artifacts(first)}
    assert "evaluation/vs-none.html" in {a.path for a in client.list_artifacts(first, "evaluation")}
    champion = next(v for v in fleet["project"].versions("demand") if "champion" in v.aliases)
    evaluation = f"evaluation/vs-v{champion.version}.html"
    assert evaluation in {a.path for a in client.list_artifacts(latest, "evaluation")}
    assert "report.html" in {a.path for a in client.list_artifacts(champion.run_id)}  # the promotion's run

    logged = Path(client.download_artifacts(latest, evaluation, str(tmp_path)))
    page, problems = open_page(browser, logged)  # `problems` lists any request beyond the file: it needs no network
    try:
        assert page.locator(".js-plotly-plot").count() == 4 and problems == []
    finally:
        page.close()


def test_report_by_version_and_its_errors(fleet: dict[str, Any], tmp_path: Path) -> None:
    path = fleet["path"]
    champion = next(v for v in fleet["project"].versions("demand") if "champion" in v.aliases)
    out = tmp_path / "champion.html"
    output = _cli(path, "report", "demand", "--version", str(champion.version), "--out", str(out))
    assert f"promotion report of demand, version {champion.version}" in output and out.stat().st_size < 10_000_000
    both = runner.invoke(app, ["--bundle", str(path), "report", "demand", "--run", "x", "--version", "1"])
    assert both.exit_code == 2 and "not both" in both.output
    unknown = runner.invoke(app, ["--bundle", str(path), "report", "demand", "--version", "9"])
    assert unknown.exit_code == 2 and "has no version 9" in unknown.output and "Traceback" not in unknown.output
    for args in (["report", "demand", "--run", "BADID"], ["show", "BADID"]):  # an unknown id is bad input: exit 2
        wrong = runner.invoke(app, ["--bundle", str(path), *args])
        assert wrong.exit_code == 2 and "no run 'BADID'" in wrong.output and "Traceback" not in wrong.output, args
    written = fleet["project"].report("demand", out=tmp_path / "api.html")  # the Python API: the champion's
    assert "<title>demand: promotion report</title>" in written.read_text(encoding="utf-8")


def test_chart_titles_stand_clear_of_the_toolbar(fleet: dict[str, Any], browser: Any) -> None:
    """Hovered, each chart shows plotly's toolbar at its top right: no title runs under it."""
    page, problems = open_page(browser, fleet["page"])
    try:
        plots = page.locator(".js-plotly-plot")
        for i in range(plots.count()):
            plot = plots.nth(i)
            plot.scroll_into_view_if_needed()
            plot.hover()
            bar = plot.locator(".modebar").bounding_box()
            titles = plot.locator(".gtitle")
            assert bar is not None and titles.count() <= 1
            if titles.count():
                box = titles.first.bounding_box()
                assert box is not None
                apart = box["x"] + box["width"] <= bar["x"] or box["y"] >= bar["y"] + bar["height"]
                assert apart, f"chart {i + 1}: title {titles.first.text_content()!r} {box} under the toolbar {bar}"
        assert problems == []
    finally:
        page.close()
