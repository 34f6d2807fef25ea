"""The report's figures stay small at any fleet size; the page escapes what segments are called."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from manymodels.jobs.pages import evaluation_section, training_sections
from manymodels.report import Chart, Section, Table, ecdf, histogram, reason_of, render_page, scatter
from manymodels.report.charts import BINS, MAX_POINTS, boxes


def _manifest(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    status = np.where(rng.random(n) < 0.02, "failed", "ok")
    frame = pd.DataFrame({
        "store": [f"s{i}" for i in range(n)], "segment_index": np.arange(n), "status": status,
        "error": pd.array([None] * n, dtype="string"), "rows": rng.integers(5, 500, n),
        "n_train": rng.integers(4, 400, n), "n_test": 5, "shard": "shard-00000.parquet",
        "model_format": "lightgbm-text", "fingerprint": "f", "fit_seconds": 0.1, "constant": False,
        "rmse": rng.gamma(4.0, 0.3, n),
    })
    failed = frame["status"] == "failed"
    frame.loc[failed, "rmse"] = np.nan
    frame.loc[failed, "error"] = [f"segment has {k} rows, min_rows is 30" for k in rng.integers(1, 29, failed.sum())]
    return frame


def _figures(html: str) -> list[dict]:
    """The data of every chart in a page, as plotly.js receives it."""
    calls = re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', html, flags=re.S)
    return [json.loads(c) for c in calls]


def test_a_100k_segment_page_is_small_and_its_charts_bounded() -> None:
    manifest = _manifest(100_000)
    html = render_page("demand", "test", training_sections(manifest, ["store"], "rmse", [("run", "r1")]))
    assert len(html.encode()) < 10_000_000  # plotly.js (~4.7 MB) and the data of a few bounded charts
    traces = [t for fig in _figures(html) for t in fig]
    assert traces
    for trace in traces:
        assert len(trace.get("x", [])) <= max(MAX_POINTS, 400), trace.get("type")
    assert "A seeded sample of 4,000 of" in html  # the scatter says it shows a sample


def test_histogram_bins_and_sets_aside_the_extreme_tail() -> None:
    values = np.concatenate([np.linspace(0, 1, 10_000), [500.0]])
    figure = histogram(values, "t", "x")
    bar = figure["data"][0]
    assert len(bar["x"]) == BINS and sum(bar["y"]) < len(values)  # the 1% tail is counted aside...
    assert "not drawn" in figure["layout"]["annotations"][0]["text"]  # ...and says so
    assert max(bar["x"]) <= 1.0


def test_figures_of_degenerate_values_draw_and_say_why() -> None:
    constant = histogram(np.full(50, 3.0), "t", "x")  # no spread: one bar, no division by zero
    assert constant["data"][0]["y"] == [50]
    nothing = histogram([np.nan, np.inf], "t", "x")
    assert nothing["data"] == [] and "no finite values" in nothing["layout"]["annotations"][0]["text"]
    assert ecdf([], "t", "x")["data"] == []
    assert boxes({"a": [np.nan]}, "t", "y")["data"] == []
    figure, shown = scatter([1.0, np.nan], [np.nan, 2.0], ["a", "b"], "t", "x", "y")
    assert shown == 0 and figure["data"] == []


def test_scatter_sample_is_seeded_and_bounded() -> None:
    n = 50_000
    x = np.arange(n, dtype=float)
    first, shown = scatter(x, x, [str(i) for i in range(n)], "t", "x", "y", diagonal=True)
    again, _ = scatter(x, x, [str(i) for i in range(n)], "t", "x", "y", diagonal=True)
    assert shown == MAX_POINTS and first == again
    assert first["data"][-1]["name"] == "equal"  # the diagonal a challenger is read against


def test_failure_reasons_group_messages_that_differ_in_numbers() -> None:
    assert reason_of("segment has 3 rows, min_rows is 30") == reason_of("segment has 12 rows, min_rows is 30")
    assert reason_of("boom\nTraceback ...") == "boom"
    assert reason_of("") == "(no message)"


def test_the_page_escapes_segment_names_in_tables_and_charts() -> None:
    hostile = "</script><script>alert(1)</script>"
    section = Section("s", "s", facts=[("segment", hostile)], tables=[Table(["segment"], [[hostile]])])
    figure, _ = scatter([1.0], [2.0], [hostile], "t", "x", "y")
    section.charts.append(Chart(figure))
    html = render_page(hostile, hostile, [section])
    assert "<script>alert(1)" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html  # shown as text in the table
    assert "\\u003c\\u002fscript\\u003e" in html  # and inside the chart's JSON


def test_evaluation_section_orders_losses_first() -> None:
    table = pd.DataFrame({
        "store": ["a", "b", "c", "d"],
        "challenger": [1.0, 3.0, 1.5, np.nan], "champion": [2.0, 1.0, 1.0, 1.0],
        "rows": [10, 10, 10, 0], "status": ["won", "lost", "lost", "no_data"],
        "change": [-0.5, 2.0, 0.5, np.nan], "decision": ["promote", "keep", "keep", "keep"],
        "reason": ["better", "worse", "worse", "no evaluation rows"],
    })
    section = evaluation_section(table, ["store"], "rmse", "Evaluation", [])
    rows = section.tables[0].rows
    assert [r[0] for r in rows] == ["b", "c", "a", "d"]  # largest loss first, then the other loss, the win
    assert ("lost", "2") in section.facts and len(section.charts) == 4


def test_a_forecast_run_shows_its_error_by_step_and_against_naive() -> None:
    import json

    import pandas as pd

    from manymodels.report import forecast_section

    manifest = pd.DataFrame({"store": ["a", "b", "c"], "status": ["ok", "ok", "failed"], "rmse": [1.0, 3.0, None],
                             "holdout_naive": [2.0, 2.0, None],
                             "step_metric": [json.dumps([0.5, 1.5]), json.dumps([1.0, None]), None]})
    section = forecast_section(manifest, "rmse")
    assert section is not None and dict(section.facts)["worse than naive on the holdout"] == "1 of 2 segments"
    assert [row[0] for row in section.tables[0].rows] == ["1", "2"] and section.charts
    assert forecast_section(manifest.drop(columns="step_metric"), "rmse") is None


def test_a_chart_by_training_rows_is_left_out_when_every_segment_has_as_many() -> None:
    """Segments of one length (a forecast fleet's, often) would draw one column of points: a line says why not."""
    manifest = _manifest(50).assign(n_train=136)
    fleet = training_sections(manifest, ["store"], "rmse", [("run", "r1")])[0]
    assert [c.figure["layout"]["title"]["text"] for c in fleet.charts] == ["rmse over segments",
                                                                             "rmse: cumulative share of segments"]
    assert "Every segment trained on 136 rows: the chart of rmse by training rows is left out." in fleet.notes
    varied = training_sections(_manifest(50), ["store"], "rmse", [("run", "r1")])[0]
    assert varied.charts[-1].figure["layout"]["title"]["text"] == "rmse vs training rows"


def _plotted(n: int, horizon: int = 12) -> pd.DataFrame:
    """A forecast manifest whose segments carry their plot records (as training keeps them)."""
    rng = np.random.default_rng(3)
    manifest = _manifest(n).drop(columns="rmse").assign(rmse=rng.gamma(4.0, 0.3, n), status="ok")
    records = []
    for _ in range(n):
        level = rng.normal(100, 10)
        forecast = (level + rng.normal(size=horizon)).round(3).tolist()
        records.append(json.dumps({"start": "2026-01-05T00:00:00", "history": (level + rng.normal(size=24)).tolist(),
                                   "actual": (level + rng.normal(size=horizon)).tolist(), "forecast": forecast,
                                   "w80": [1.0] * horizon, "w95": [None] * horizon}))
    return manifest.assign(holdout_plot=records, step_metric="[1.0]", holdout_naive=1.0)


def test_a_forecast_page_draws_25_segments_and_packs_every_other_in_bounded_bytes() -> None:
    from manymodels.report.forecast_plots import forecast_plots_section

    manifest = _plotted(20_000)
    labels = [f"s{i}" for i in range(len(manifest))]
    section = forecast_plots_section(manifest, None, labels, "rmse", False, None)
    assert section is not None and len(section.charts) == 25
    worst = manifest["rmse"].sort_values(ascending=False).index[:25]
    assert [c.figure["layout"]["title"]["text"].split(" — ")[0] for c in section.charts] == [labels[i] for i in worst]
    data = re.search(r'id="pick-data">(.*?)</script>', section.html, flags=re.S)
    assert data is not None and len(data.group(1)) / len(manifest) < 200  # bytes a segment in the page
    packed = json.loads(data.group(1))
    assert len(packed["meta"]) == 20_000 and packed["meta"][0][0] == labels[worst[0]]


def test_a_segment_called_like_a_script_stays_text_in_the_selector() -> None:
    from manymodels.report.forecast_plots import forecast_plots_section

    manifest = _plotted(3)
    hostile = "</script><script>alert(1)</script>"
    section = forecast_plots_section(manifest, None, [hostile, "a", "b"], "rmse", False, None)
    assert section is not None and "alert(1)</script>" not in section.html and "<script>alert" not in section.html
    html = render_page("demand", "test", [section])
    assert "<script>alert" not in html and "alert(1)</script>" not in html
    data = re.search(r'id="pick-data">(.*?)</script>', html, flags=re.S)
    assert data is not None and json.loads(data.group(1))["meta"][0][0] == hostile  # read back as it was
