"""Plotly figures (as plain dicts, drawn by plotly.js in the page) that stay small at any fleet size.

A figure never carries one point per segment: distributions are binned here, curves are taken at
a bounded number of quantiles, and scatter plots show a seeded sample (the caption says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_POINTS = 4000  # scatter points per figure (a seeded sample above that)
BINS = 40
CURVE_POINTS = 400
SAMPLE_SEED = 0

Figure = dict[str, Any]


def finite(values: Any) -> np.ndarray:
    """The finite values, as floats."""
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def sample_index(count: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Positions of at most `limit` of `count` items, the same ones every time (seeded, in order)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(count, size=limit, replace=False))


def _layout(title: str, x: str, y: str, **more: Any) -> dict[str, Any]:
    """A figure's layout. The title sits on its own line just above the plot, from its left edge, under the toolbar
    plotly shows at the top right on hover (a centred title ran under it)."""
    grid = {"gridcolor": "#e5e8ee", "zerolinecolor": "#c9ced8"}
    return {
        "title": {"text": title, "x": 0, "xref": "paper", "xanchor": "left", "y": 1, "yref": "paper",
                  "yanchor": "bottom", "pad": {"b": 10}, "font": {"size": 15}},
        "xaxis": {"title": {"text": x}, **grid, **more.pop("xaxis", {})},
        "yaxis": {"title": {"text": y}, **grid, **more.pop("yaxis", {})},
        "margin": {"l": 60, "r": 20, "t": 66, "b": 50},
        "height": 360,
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        **more,
    }


def histogram(values: Any, title: str, x: str, bins: int = BINS) -> Figure:
    """Counts of `values` in equal-width bins (binned here: the figure holds `bins` bars, whatever the count)."""
    data = finite(values)
    if data.size == 0:
        return empty_figure(title, "no finite values")
    note = ""
    if data.size >= 100:  # a few extreme segments would squash the rest into one bar: they are counted aside
        high = float(np.quantile(data, 0.99))
        beyond = data > high
        if beyond.any() and np.ptp(data[~beyond]) > 0:
            note = f"{int(beyond.sum()):,} above {high:.4g} (up to {data.max():.4g}) not drawn"
            data = data[~beyond]
    counts, edges = np.histogram(data, bins=bins if np.ptp(data) > 0 else 1)
    centers = (edges[:-1] + edges[1:]) / 2
    bar = {
        "type": "bar",
        "x": centers.tolist(),
        "y": counts.tolist(),
        "width": float(np.diff(edges).min()) or None,
        "marker": {"color": "#4c78a8"},
        "hovertemplate": "%{x:.4g}: %{y} segments<extra></extra>",
    }
    layout = _layout(title, x, "segments", bargap=0.02)
    if note:
        layout["annotations"] = [
            {
                "text": note,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 1,
                "y": 1,
                "xanchor": "right",
                "font": {"size": 11, "color": "#5b6473"},
            }
        ]
    return {"data": [bar], "layout": layout}


def ecdf(values: Any, title: str, x: str, points: int = CURVE_POINTS) -> Figure:
    """The share of segments at or below each value, taken at `points` quantiles."""
    data = finite(values)
    if data.size == 0:
        return empty_figure(title, "no finite values")
    share = np.linspace(0.0, 1.0, min(points, data.size))
    at = np.quantile(data, share)
    line = {
        "type": "scatter",
        "mode": "lines",
        "x": at.tolist(),
        "y": share.tolist(),
        "line": {"shape": "hv"},
        "hovertemplate": "%{y:.1%} of segments at or below %{x:.4g}<extra></extra>",
    }
    return {"data": [line], "layout": _layout(title, x, "share of segments", yaxis={"tickformat": ".0%"})}


def scatter(
    x: Any,
    y: Any,
    labels: Sequence[str],
    title: str,
    x_title: str,
    y_title: str,
    groups: Sequence[str] | None = None,
    diagonal: bool = False,
    log_x: bool = False,
) -> tuple[Figure, int]:
    """A scatter of a seeded sample of points (by group when given); the figure and how many points it shows."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    keep = keep[sample_index(keep.size)]
    names = np.asarray(labels, dtype=object)
    kinds = np.asarray(groups, dtype=object) if groups is not None else np.full(len(xs), "", dtype=object)
    traces = []
    for kind in dict.fromkeys(kinds[keep].tolist()):
        at = keep[kinds[keep] == kind]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": str(kind) or "segments",
                "x": xs[at].tolist(),
                "y": ys[at].tolist(),
                "text": names[at].tolist(),
                "marker": {"size": 5, "opacity": 0.6},
                "hovertemplate": "%{text}<br>%{x:.4g}, %{y:.4g}<extra>%{fullData.name}</extra>",
            }
        )
    layout = _layout(title, x_title, y_title, showlegend=groups is not None)
    if log_x:
        layout["xaxis"]["type"] = "log"
    if diagonal and keep.size:
        low = float(min(xs[keep].min(), ys[keep].min()))
        high = float(max(xs[keep].max(), ys[keep].max()))
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": [low, high],
                "y": [low, high],
                "name": "equal",
                "line": {"dash": "dot", "color": "#888"},
                "hoverinfo": "skip",
            }
        )
        layout["showlegend"] = True
    if not traces:
        return empty_figure(title, "no segment has both values"), 0
    return {"data": traces, "layout": layout}, int(keep.size)


def bars(labels: Sequence[str], counts: Sequence[float], title: str, x: str, horizontal: bool = False) -> Figure:
    """Counts by label (a handful of bars)."""
    if not len(labels):
        return empty_figure(title, "nothing to count")
    names, values = [str(v) for v in labels], [float(v) for v in counts]
    bar: dict[str, Any] = {
        "type": "bar",
        "marker": {"color": "#4c78a8"},
        "text": [f"{v:,.0f}" for v in values],
        "textposition": "auto",
    }
    if horizontal:
        bar.update(x=values, y=names, orientation="h")
        layout = _layout(title, "segments", "", yaxis={"autorange": "reversed", "automargin": True})
    else:
        bar.update(x=names, y=values)
        layout = _layout(title, x, "segments")
    layout["height"] = max(300, 60 + 28 * len(names)) if horizontal else 360
    return {"data": [bar], "layout": layout}


def boxes(groups: dict[str, Any], title: str, y: str) -> Figure:
    """One box per group from its quantiles (computed here: the figure holds five numbers per box)."""
    traces = []
    for name, values in groups.items():
        data = finite(values)
        if data.size == 0:
            continue
        q1, median, q3 = np.quantile(data, [0.25, 0.5, 0.75])
        traces.append(
            {
                "type": "box",
                "name": str(name),
                "q1": [q1],
                "median": [median],
                "q3": [q3],
                "lowerfence": [float(data.min())],
                "upperfence": [float(data.max())],
                "x": [str(name)],
            }
        )
    if not traces:
        return empty_figure(title, "no values")
    return {"data": traces, "layout": _layout(title, "", y, showlegend=False)}


def empty_figure(title: str, why: str) -> Figure:
    """A figure that says why it has nothing to draw (a chart is still drawn: the page's layout does not shift)."""
    return {
        "data": [],
        "layout": _layout(
            title,
            "",
            "",
            annotations=[{"text": why, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}],
            xaxis={"visible": False},
            yaxis={"visible": False},
        ),
    }


def heatmap(values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str, scale: str) -> Figure:
    """A rows x columns grid of values (a few dozen rows: the caller picks which)."""
    if len(rows) == 0:
        return empty_figure(title, "nothing to show")
    grid = [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(values, dtype=float)]
    cells = {"type": "heatmap", "z": grid, "x": list(columns), "y": list(rows), "colorscale": "YlOrRd",
             "reversescale": True, "colorbar": {"title": {"text": scale}},
             "hovertemplate": "%{y}<br>%{x}: %{z:.3g}<extra></extra>"}
    layout = _layout(title, "", "", yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
                     xaxis={"type": "category"})
    layout["height"] = max(320, 80 + 22 * len(rows))
    return {"data": [cells], "layout": layout}
