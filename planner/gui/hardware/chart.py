"""The Hardware page's live chart: GiB used per GPU and host RAM over a rolling window.

Curves are created once per set of GPUs and only fed with ``setData`` (DESIGN.md); the data
comes from a ``History`` ring, so a chart left open for days holds at most one window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QSizePolicy, QWidget

from planner.gui.common.chart_style import (
    EmptyNote,
    follow_palette,
    keep_whole,
    series_colour,
    style_legend,
    style_plot,
    text_colour,
)
from planner.gui.hardware.model import History
from planner.units import GiB

_NICE = (1, 1.5, 2, 3, 4, 5, 6, 8)
"""Y-axis tops: 1-2-5 style steps, dense enough that a 77 GiB peak gets 80, not 100 or 128."""
MIN_VIEW = (240, 90)
"""The data area's smallest size (px): room for the y ticks to stay apart."""


class MemoryChart(pg.PlotWidget):
    """One solid curve per GPU and a dashed one for host RAM, x in minutes before the newest sample."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=None)  # transparent: the window's palette shows
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)  # a live view: panning would fight the updates
        item.setLabel("left", "used (GiB)")
        item.setLabel("bottom", "minutes ago")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.getViewBox().disableAutoRange()  # ranges are set explicitly: no per-frame autorange pass
        self.legend = pg.LegendItem(frame=False)
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        item.layout.addItem(self.legend, 2, 3, alignment=Qt.AlignmentFlag.AlignVCenter)
        item.getViewBox().setMinimumSize(*MIN_VIEW)
        self.empty_note = EmptyNote(item, "no sample yet")
        self.curves: list[pg.PlotDataItem] = []
        self.markers: list[pg.ScatterPlotItem] = []
        """A dot on each curve's newest value: the first second already shows something, and the
        current value stands out at the right edge."""
        self.host_curve: pg.PlotDataItem | None = None
        self._top = 0.0
        follow_palette(self, self._restyle)

    def set_series(self, gpu_names: Sequence[str], host: bool = True) -> None:
        """(Re)create the curves: at page creation and after a rescan found other GPUs, never per sample."""
        item = self.getPlotItem()
        for old in [*self.curves, *self.markers]:
            item.removeItem(old)
        self.legend.clear()
        self.curves, self.markers = [], []
        for i, name in enumerate(gpu_names):
            colour = series_colour(i)
            self.legend.addItem(self._curve(pg.mkPen(colour, width=2), colour), name)
        self.host_curve = None
        if host:
            self.host_curve = self._curve(self._host_pen(), text_colour(self))
            self.legend.addItem(self.host_curve, "host RAM")
        for sample, _label in self.legend.items:
            # a click would hide a curve with no way to tell it is hidden rather than at zero
            sample.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self._restyle(text_colour(self))
        keep_whole(self, item, [self.legend])

    def _curve(self, pen: object, colour: object) -> pg.PlotDataItem:
        # "finite": a NaN (value not reported that second) leaves a gap instead of a drop to 0.
        curve = pg.PlotDataItem(pen=pen, connect="finite")
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")  # 3600 points on a 60-minute window
        marker = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(colour))
        for it in (curve, marker):
            self.getPlotItem().addItem(it)
        self.curves.append(curve)
        self.markers.append(marker)
        return curve

    def set_window(self, seconds: float) -> None:
        # A sliver right of "now" so the newest-value dots are not cut in half by the frame.
        self.setXRange(-seconds / 60, seconds / 60 * 0.012, padding=0)

    def show_history(self, history: History) -> None:
        """Feed every curve from the ring."""
        t = history.times()
        x = (t - t[-1]) / 60 if len(t) else np.empty(0)
        top = 0.0
        for i, (curve, marker) in enumerate(zip(self.curves, self.markers)):
            y = history.values(i) / GiB  # a new array: the ring is rewritten in place next second
            curve.setData(x, y)
            last = y[-1:] if len(y) and np.isfinite(y[-1]) else y[:0]
            marker.setData(x[-len(last):] if len(last) else x[:0], last)
            if len(y) and not np.isnan(y).all():
                top = max(top, float(np.nanmax(y)))
        self.empty_note.set_empty(len(t) == 0)
        self._set_top(top)

    def _set_top(self, top: float) -> None:
        """Y from 0 (a flat line must not look like a swing) to a round value above the data;
        changed only when the data crosses one, so most seconds do not re-layout the axis."""
        nice = next((m * 10**k for k in range(6) for m in _NICE if m * 10**k >= top * 1.05), top * 1.05)
        if nice != self._top:
            self._top = nice
            self.setYRange(0, nice, padding=0)

    def _host_pen(self) -> object:
        return pg.mkPen(text_colour(self), width=1.5, style=Qt.PenStyle.DashLine)

    def _restyle(self, fg: QColor) -> None:
        """Axes, legend and the host curve in the palette's text colour; GPU colours are fixed."""
        style_plot(self.getPlotItem(), fg)
        style_legend(self.legend, fg)
        self.empty_note.set_colour(fg)
        if self.host_curve is not None:
            self.host_curve.setPen(self._host_pen())
            self.markers[self.curves.index(self.host_curve)].setBrush(pg.mkBrush(fg))
