"""Charts follow the system palette (light or dark): the axis, title and legend text take the
window's text colour; only the data series keep fixed colours. One place for every page's charts."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor


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
