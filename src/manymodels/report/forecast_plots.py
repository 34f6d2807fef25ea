"""A forecast fleet's segments drawn: recent history, the holdout's actual values, its forecast and its intervals.

Training keeps per segment what is drawn (`segment.forecast_fit.plot_record`: JSON beside the profiles, about 650
bytes). The page draws the worst segments by the primary metric as figures of their own, and one more figure for
any segment a reader picks (`selector`): every segment's series travels in the page itself, so the page stays one
file that needs no server. To stay bounded, each series is packed into bytes: its values quantized to 255 levels
between the segment's smallest and largest (0.4% of its range; plenty for a glance) and base64-encoded with its
label, the start of its holdout and its scale beside it, about 180 bytes a segment (18 MB at 100,000 segments,
beside plotly.js' 4.7 MB). The picked segment is drawn against steps from its holdout's start.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid, time_from_text
from manymodels.registry.manifest import HOLDOUT_PLOT, SEGMENT_INDEX, is_ok
from manymodels.report.charts import Figure, _layout
from manymodels.report.page import Chart, Section
from manymodels.segment.forecast_windows import read_plot_record

HISTORY, ACTUAL, FORECAST = "#8a94a6", "#1d2330", "#1f77b4"
BAND_95, BAND_80 = "rgba(31, 119, 180, 0.12)", "rgba(31, 119, 180, 0.25)"
MISSING = 255  # a packed value that is not there


def _series(record: dict[str, Any]) -> dict[str, np.ndarray]:
    forecast = np.asarray(record["forecast"], dtype=np.float64)  # null: NaN
    out = {"history": np.asarray(record["history"], dtype=np.float64),
           "actual": np.asarray(record["actual"], dtype=np.float64), "forecast": forecast}
    for level in ("80", "95"):
        width = np.asarray(record.get(f"w{level}") or [None] * len(forecast), dtype=np.float64)
        out[f"lo{level}"], out[f"hi{level}"] = forecast - width, forecast + width
    return out


def segment_figure(label: str, record: dict[str, Any], grid: TimeGrid | None, metric: str, value: float) -> Figure:
    """One segment's figure on its own time axis (steps from the holdout's start without a grid)."""
    series = _series(record)
    past, ahead = len(series["history"]), len(series["forecast"])
    if grid is not None and record.get("start") is not None:
        times = grid.span(time_from_text(record["start"], grid.kind), past + ahead)
        x = [str(t)[:19] if grid.kind != "number" else float(t) for t in times]
    else:
        x = list(range(-past, ahead))
    before, after = x[:past], x[past:]
    traces: list[dict[str, Any]] = []
    for level, color in (("95", BAND_95), ("80", BAND_80)):
        low, high = series[f"lo{level}"], series[f"hi{level}"]
        if np.isfinite(low).any():
            traces.append({"type": "scatter", "mode": "lines", "x": after, "y": _plain(low), "line": {"width": 0},
                           "hoverinfo": "skip", "showlegend": False, "name": f"{level}% low"})
            traces.append({"type": "scatter", "mode": "lines", "x": after, "y": _plain(high), "line": {"width": 0},
                           "fill": "tonexty", "fillcolor": color, "name": f"{level}% interval"})
    traces += [
        {"type": "scatter", "mode": "lines", "x": before, "y": _plain(series["history"]), "name": "history",
         "line": {"color": HISTORY}},
        {"type": "scatter", "mode": "lines+markers", "x": after, "y": _plain(series["actual"]), "name": "actual",
         "line": {"color": ACTUAL}, "marker": {"size": 4}},
        {"type": "scatter", "mode": "lines", "x": after, "y": _plain(series["forecast"]), "name": "forecast",
         "line": {"color": FORECAST, "dash": "dash"}},
    ]
    title = f"{label} — {metric} {value:.4g}" if np.isfinite(value) else label
    return {"data": traces, "layout": _segment_layout(title, "time" if grid is not None else STEPS_AXIS)}


STEPS_AXIS = "steps from the holdout's start"


def _segment_layout(title: str, x: str) -> dict[str, Any]:
    """A segment figure's layout, the page's own figures' and the selector's alike."""
    layout = _layout(title, x, "")
    layout["legend"] = {"orientation": "h", "y": -0.25}
    layout["height"] = 380
    return layout


def _plain(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def pack_series(labels: Sequence[str], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every segment's series for the page's selector: `meta` (label, holdout start, history and horizon steps,
    smallest value, step of one level) per segment and `bytes` (base64): per segment, history, actual, forecast,
    and the 95% and 80% bounds (low, high), each value a byte (MISSING: none)."""
    meta: list[list[Any]] = []
    chunks: list[bytes] = []
    for label, record in zip(labels, records, strict=True):
        series = _series(record)
        parts = [series[k] for k in ("history", "actual", "forecast", "lo95", "hi95", "lo80", "hi80")]
        values = np.concatenate(parts)
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        span = float(finite.max()) - low if finite.size else 0.0
        step = span / (MISSING - 1) if span > 0 else 1.0
        packed = np.full(values.size, MISSING, dtype=np.uint8)
        present = np.isfinite(values)
        packed[present] = np.clip(np.rint((values[present] - low) / step), 0, MISSING - 1).astype(np.uint8)
        chunks.append(packed.tobytes())
        meta.append([label, record.get("start"), len(series["history"]), len(series["forecast"]), float(f"{low:.7g}"),
                     float(f"{step:.7g}")])
    return {"meta": meta, "bytes": base64.b64encode(b"".join(chunks)).decode("ascii")}


def selector_html(packed: dict[str, Any]) -> str:
    """The selector: a search box, the matching segments (the first 20) and the picked segment's figure, drawn by
    the page's own script from `pack_series`' data (held as JSON in a script element, with `<`, `>` and `&` as JSON
    escapes: no segment name can end the element or start markup)."""
    data = json.dumps({**packed, "layout": _segment_layout("", STEPS_AXIS),
                       "colors": {"history": HISTORY, "actual": ACTUAL, "forecast": FORECAST, "95": BAND_95,
                                  "80": BAND_80}}, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<div class="pick"><label>segment <input type="search" id="pick-query" placeholder="type part of a '
        'segment\'s name" size="40"></label> <span id="pick-count"></span><div id="pick-list"></div>'
        '<div id="pick-chart" class="pick-chart"></div></div>'
        f'<script type="application/json" id="pick-data">{data}</script>'
        f"<script>{_SCRIPT}</script>"
    )


_SCRIPT = """
(function () {
  const packed = JSON.parse(document.getElementById("pick-data").textContent);
  const raw = atob(packed.bytes), bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const starts = [];
  let at = 0;
  for (const m of packed.meta) { starts.push(at); at += m[2] + 6 * m[3]; }
  const query = document.getElementById("pick-query"), list = document.getElementById("pick-list");
  const count = document.getElementById("pick-count");
  function values(i, from, n) {
    const m = packed.meta[i], out = [];
    for (let k = 0; k < n; k++) {
      const b = bytes[starts[i] + from + k];
      out.push(b === 255 ? null : m[4] + b * m[5]);
    }
    return out;
  }
  function draw(i) {
    const m = packed.meta[i], past = m[2], h = m[3];
    const before = [], after = [];
    for (let k = -past; k < 0; k++) before.push(k);
    for (let k = 0; k < h; k++) after.push(k);
    const part = (j) => values(i, past + j * h, h);
    const band = (lo, hi, name, color) => [
      {type: "scatter", mode: "lines", x: after, y: part(lo), line: {width: 0}, hoverinfo: "skip",
       showlegend: false, name: name + " low"},
      {type: "scatter", mode: "lines", x: after, y: part(hi), line: {width: 0}, fill: "tonexty",
       fillcolor: color, name: name}];
    const c = packed.colors;
    const traces = [].concat(
      band(2, 3, "95% interval", c["95"]), band(4, 5, "80% interval", c["80"]),
      [{type: "scatter", mode: "lines", x: before, y: values(i, 0, past), name: "history", line: {color: c.history}},
       {type: "scatter", mode: "lines+markers", x: after, y: part(0), name: "actual", line: {color: c.actual},
        marker: {size: 4}},
       {type: "scatter", mode: "lines", x: after, y: part(1), name: "forecast",
        line: {color: c.forecast, dash: "dash"}}]);
    const layout = JSON.parse(JSON.stringify(packed.layout));  // the page's own segment figures' layout
    layout.title.text = m[0] + (m[1] ? " (history from " + String(m[1]).slice(0, 10) + ")" : "");
    Plotly.newPlot("pick-chart", traces, layout, {displaylogo: false, responsive: true});
  }
  function show() {
    const text = query.value.trim().toLowerCase();
    const found = [];
    for (let i = 0; i < packed.meta.length && found.length < 20; i++) {
      if (String(packed.meta[i][0]).toLowerCase().includes(text)) found.push(i);
    }
    list.replaceChildren();
    for (const i of found) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = String(packed.meta[i][0]);
      button.addEventListener("click", () => draw(i));
      list.appendChild(button);
    }
    count.textContent = packed.meta.length.toLocaleString() + " segments" + (text ? "; the first matches:" : "");
  }
  query.addEventListener("input", show);
  show();
  if (packed.meta.length) draw(0);
})();
"""


WORST_PLOTS = 25  # segments drawn each in a figure of its own


def forecast_plots_section(manifest: pd.DataFrame, plots: pd.Series | None, labels: Sequence[str], metric: str,
                           higher: bool, grid: TimeGrid | None, worst: int = WORST_PLOTS) -> Section | None:
    """The worst segments' figures by `metric` and a selector over every segment with a plot; None without any.

    Args:
        manifest: the pack's manifest (with HOLDOUT_PLOT while training; else `plots` gives them).
        plots: each segment's plot record by segment_index (`Pack.plots`), or None.
        labels: each manifest row's segment label.
        metric, higher: the primary metric and whether larger is better.
        grid: the fleet's time grid (None: figures on steps from the holdout's start).
    """
    if HOLDOUT_PLOT in manifest.columns:
        texts = manifest[HOLDOUT_PLOT].to_numpy(dtype=object)
    elif plots is not None and len(plots):
        texts = manifest[SEGMENT_INDEX].map(plots).to_numpy(dtype=object)
    else:
        return None
    records = [read_plot_record(t) for t in texts]
    have = np.array([r is not None for r in records], dtype=bool) & is_ok(manifest).to_numpy()
    if not have.any():
        return None
    values = manifest[metric].to_numpy(dtype=float) if metric in manifest.columns else np.full(len(manifest), np.nan)
    rank = np.where(np.isfinite(values), -values if not higher else values, np.inf)
    order = [i for i in np.lexsort((np.arange(len(manifest)), rank)) if have[i]]
    section = Section("Forecasts of the segments", "forecast-plots", facts=[
        ("segments drawn", f"{min(worst, len(order)):,} worst by {metric}"),
        ("in the selector", f"{len(order):,}")])
    section.notes.append("Each figure: the last steps of history, the holdout's actual values, the forecast of them "
                         "from the steps before, and its 80% and 95% intervals (shaded; none where the segment had "
                         "too few window errors).")
    for i in order[:worst]:
        section.charts.append(Chart(segment_figure(labels[i], records[i], grid, metric, values[i])))
    section.html = selector_html(pack_series([labels[i] for i in order], [records[i] for i in order]))
    return section
