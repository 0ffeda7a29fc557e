"""Charts follow the system palette (light or dark): the axis, title and legend text take the
window's text colour; only the data series keep fixed colours. One place for every page's charts."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor

# Tableau 10, as the Plan page: distinguishable on light and dark backgrounds.
SERIES_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f")


def series_colour(i: int, taken: tuple[str, ...] = ()) -> str:
    """The ``i``-th series colour, skipping those the chart already gives other curves."""
    used = {c.lower() for c in taken}
    free = [c for c in SERIES_COLOURS if c.lower() not in used] or list(SERIES_COLOURS)
    return free[i % len(free)]


def style_plot(item: pg.PlotItem, fg: QColor) -> None:
    """Axes (and the title, if any) in ``fg``."""
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(fg)
        axis.setTextPen(fg)
    if item.titleLabel.text:
        item.titleLabel.setAttr("color", fg)
        item.setTitle(item.titleLabel.text)


def style_legend(legend: pg.LegendItem, fg: QColor) -> None:
    legend.setLabelTextColor(fg)
    for _sample, label in legend.items:
        label.setText(label.text)  # setAttr alone does not re-render the label
