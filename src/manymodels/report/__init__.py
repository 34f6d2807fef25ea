"""Self-contained HTML reports of a fleet: plotly charts and tables, sized for 100,000 segments."""

from manymodels.report.charts import bars, boxes, ecdf, empty_figure, heatmap, histogram, scatter
from manymodels.report.page import REPORT_FILE, Chart, Section, Table, cell, render_page, write_page
from manymodels.report.sections import fleet_section, forecast_section, reason_of, segment_labels, selection_section

__all__ = [
    "REPORT_FILE",
    "Chart",
    "Section",
    "Table",
    "bars",
    "boxes",
    "cell",
    "ecdf",
    "empty_figure",
    "fleet_section",
    "heatmap",
    "histogram",
    "reason_of",
    "render_page",
    "scatter",
    "segment_labels",
    "selection_section",
    "forecast_section",
    "write_page",
]
