"""One self-contained HTML page: sections of facts, charts and tables, with plotly.js embedded once.

Everything a section carries is escaped (segment values can be anything); the charts' data goes
through plotly's own JSON encoding, which escapes what could close a script element.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from manymodels.distribution import version
from manymodels.report.charts import Figure

REPORT_FILE = "report.html"


@dataclass
class Table:
    """Rows to show as they are; `anchors` gives rows an id (links point at them); `links` makes a column link."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    anchors: list[str] | None = None
    links: dict[str, list[str]] = field(default_factory=dict)  # column -> one href per row
    css: str = ""


@dataclass
class Chart:
    """A figure with a caption (what it shows, and when it shows a sample)."""

    figure: Figure
    caption: str = ""


@dataclass
class Section:
    """A part of the page: its title, facts (label, value), notes, charts and tables."""

    title: str
    anchor: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    html: str = ""  # markup of manymodels' own making (its data escaped there), after the charts


_TEMPLATE = "page.html.j2"  # beside this module: the page, its style, where charts and tables go



@functools.cache
def _template() -> jinja2.Template:
    loader = jinja2.PackageLoader("manymodels.report", ".")
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined).get_template(_TEMPLATE)


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page as one HTML string (plotly.js inside: about 4.7 MB, whatever the fleet's size)."""
    views = []
    count = 0
    for section in sections:
        charts = []
        for chart in section.charts:
            count += 1
            html = pio.to_html(
                chart.figure,
                include_plotlyjs=False,
                full_html=False,
                validate=False,
                div_id=f"chart-{count}",
                config={"displaylogo": False, "responsive": True},
            )
            charts.append({"html": jinja2.utils.markupsafe.Markup(html), "caption": chart.caption})
        views.append({**section.__dict__, "charts": charts,
                      "html": jinja2.utils.markupsafe.Markup(section.html)})  # noqa: S704 - made by forecast_plots
    return _template().render(
        title=title,
        subtitle=subtitle,
        sections=views,
        plotly_js=jinja2.utils.markupsafe.Markup(get_plotlyjs()),
        version=version(),
        made=dt.datetime.now().isoformat(timespec="seconds"),
    )


def write_page(path: Path, html: str) -> Path:
    """Write a page (UTF-8) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def cell(value: Any, digits: int = 4) -> str:
    """A table cell's text: numbers to `digits` significant digits, missing values (None, NaN, NA) as an empty cell."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
