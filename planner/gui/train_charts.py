"""The Train page's live charts: loss, learning rate, tokens/s and memory against the prediction.

Every curve is created once (a rank's memory curve when a run first has that rank);
:meth:`TrainCharts.show_model` only calls ``setData`` (DESIGN.md), and
the page calls it on a ~10 Hz timer only when the run model changed. Long runs stay cheap with
``setDownsampling(auto=True)`` and ``setClipToView(True)`` (the x values are sorted steps).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

from planner.gui.chart_style import series_colour, style_legend, style_plot
from planner.gui.run_model import RunModel, Series
from planner.units import GiB

# Tableau 10, as the other pages: distinguishable on light and dark backgrounds.
BLUE, ORANGE, GREEN, RED, TEAL, PURPLE, GREY = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                                "#b07aa1", "#bab0ac")


_NICE = (1, 1.5, 2, 3, 4, 5, 6, 8)
"""Memory axis tops, as the Hardware page: 1-2-5 style steps."""


def _xy(series: Series, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    # new arrays each frame: the model's lists keep growing in place
    return np.asarray(series.x, dtype=float), np.asarray(series.y, dtype=float) / scale


class TrainCharts(pg.GraphicsLayoutWidget):
    """Four plots in a 2x2 grid sharing the step axis."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(None)  # transparent: the window's palette shows through
        self.ci.layout.setSpacing(4)
        self.plots: dict[str, pg.PlotItem] = {}
        self.legends: list[pg.LegendItem] = []
        loss = self._plot("loss", 0, 0, "loss", legend=True)
        lr = self._plot("lr", 0, 1, "learning rate")
        tps = self._plot("tps", 1, 0, "tokens/s")
        mem = self._plot("memory", 1, 1, "memory (GiB)", legend=True)
        for plot in (lr, tps, mem):
            plot.setXLink(loss)  # one step range for all four: zooming one zooms all

        self.loss_raw = self._curve(loss, pg.mkPen(GREY, width=1), "loss")
        self.loss_ema = self._curve(loss, pg.mkPen(BLUE, width=2.5), "smoothed (EMA)")
        self.eval_loss = pg.PlotDataItem(pen=None, symbol="o", symbolSize=8, symbolBrush=ORANGE, symbolPen=None,
                                         name="eval loss")
        loss.addItem(self.eval_loss)
        self.lr = self._curve(lr, pg.mkPen(GREEN, width=2), None)
        self.tokens_per_s = self._curve(tps, pg.mkPen(PURPLE, width=1.5), None)
        self.peak_alloc = self._curve(mem, pg.mkPen(BLUE, width=2), "peak allocated (torch)")
        self.peak_reserved = self._curve(mem, pg.mkPen(TEAL, width=2), "peak reserved (torch)")
        self.rss = self._curve(mem, pg.mkPen(ORANGE, width=2), "process RSS (host)")
        self.device_used = self._curve(mem, pg.mkPen(RED, width=2), "fullest GPU, NVML")
        self.predicted = pg.InfiniteLine(angle=0, movable=False, label="predicted",
                                         labelOpts={"position": 0.02, "anchors": [(0, 1), (0, 1)]})
        self.predicted.hide()
        mem.addItem(self.predicted)
        self.rank_curves: list[pg.PlotDataItem] = []
        """One per rank of a multi-process run, made when a run first has that many ranks, then reused."""
        # Legend entries appear with their first data: an empty eval series or torch's zero peaks
        # on a CPU run would otherwise be listed for curves that are not drawn.
        self._legend_of: dict[pg.PlotDataItem, tuple[pg.LegendItem, str]] = {}
        for legend in self.legends:
            for sample, label in list(legend.items):
                self._legend_of[sample.item] = (legend, label.text)
                legend.removeItem(sample.item)
        self._listed: set[pg.PlotDataItem] = set()
        self._memory_legend = self.legends[-1]
        self._memory_top = 0.0
        self._ready = True
        self._apply_palette()

    def _plot(self, key: str, row: int, col: int, title: str, legend: bool = False) -> pg.PlotItem:
        plot = self.addPlot(row=row, col=col)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setTitle(title)
        plot.setLabel("bottom", "step")
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        if legend:
            self.legends.append(plot.addLegend(offset=(-8, 8), labelTextSize="8pt"))
            self.legends[-1].setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.plots[key] = plot
        return plot

    @staticmethod
    def _curve(plot: pg.PlotItem, pen: object, name: str | None) -> pg.PlotDataItem:
        curve = plot.plot(pen=pen, name=name)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        return curve

    def _list(self, curve: pg.PlotDataItem, has_data: bool) -> None:
        """Add or drop the curve's legend entry when it gains or loses data (rare: not per frame)."""
        if has_data == (curve in self._listed) or curve not in self._legend_of:
            return
        legend, name = self._legend_of[curve]
        if has_data:
            legend.addItem(curve, name)
            self._listed.add(curve)
            sample = legend.items[-1][0]
            # a click would hide a curve, which then reads as "no data"
            sample.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        else:
            legend.removeItem(curve)
            self._listed.discard(curve)

    def _rank_curve(self, rank: int) -> pg.PlotDataItem:
        while len(self.rank_curves) <= rank:
            # the memory plot's other curves keep their colours: GPU 0 takes peak allocated's blue
            colour = series_colour(len(self.rank_curves), taken=(TEAL, ORANGE, RED))
            curve = self._curve(self.plots["memory"], pg.mkPen(colour, width=2), None)
            self._legend_of[curve] = (self._memory_legend, "")
            self.rank_curves.append(curve)
        return self.rank_curves[rank]

    def _label(self, curve: pg.PlotDataItem, label: str) -> None:
        """A rank curve's legend text (GPU or CPU rank, its device): re-listed only when it changes."""
        legend, old = self._legend_of[curve]
        if label != old:
            listed = curve in self._listed
            self._list(curve, False)
            self._legend_of[curve] = (legend, label)
            self._list(curve, listed)

    def show_model(self, model: RunModel) -> None:
        """Feed every curve from the model (called on the page's timer, only after a change)."""
        for curve, series in ((self.loss_raw, model.loss), (self.loss_ema, model.loss_ema),
                              (self.eval_loss, model.eval_loss), (self.lr, model.lr),
                              (self.tokens_per_s, model.tokens_per_s)):
            curve.setData(*_xy(series))
            self._list(curve, len(series) > 0)
        ranks = model.rank_memory()
        # Several ranks: one curve each replaces the run-wide curve of the same measure (their max).
        # On the CPU torch reports no allocator peaks (zeros): leave those curves empty rather than
        # draw a flat line at 0 that reads as "no memory used".
        for curve, series, kind in ((self.peak_alloc, model.peak_alloc, "peak_alloc"),
                                    (self.peak_reserved, model.peak_reserved, None),
                                    (self.rss, model.rss, "rss"), (self.device_used, model.device_used, None)):
            shown = any(series.y) and kind != ranks.kind
            curve.setData(*(_xy(series, GiB) if shown else ([], [])))
            self._list(curve, shown)
        for rank, (label, series) in enumerate(ranks.curves):
            curve = self._rank_curve(rank)
            self._label(curve, label)
            shown = any(series.y)
            curve.setData(*(_xy(series, GiB) if shown else ([], [])))
            self._list(curve, shown)
        for curve in self.rank_curves[len(ranks.curves):]:  # a run with fewer ranks than the last one
            curve.setData([], [])
            self._list(curve, False)
        # the run-wide series are the ranks' maxima: they set the axis even while hidden
        top = max((max(s.y) for s in (model.peak_alloc, model.peak_reserved, model.rss, model.device_used) if s.y),
                  default=0.0)
        if model.predicted_peak_bytes:
            gib = model.predicted_peak_bytes / GiB
            self.predicted.show()  # first: a hidden label ignores format changes
            self.predicted.setValue(gib)
            self.predicted.label.setFormat(f"predicted {gib:.3g} GiB")
            top = max(top, model.predicted_peak_bytes)
        else:
            self.predicted.hide()
        self._set_memory_top(top / GiB)

    def _set_memory_top(self, top: float) -> None:
        """Memory from 0 (a flat line must not read as a swing) to a round value above the data and
        the prediction; the axis changes only when the data crosses one."""
        nice = next((m * 10**k for k in range(-3, 6) for m in _NICE if m * 10**k >= top * 1.08), top * 1.08)
        if top > 0 and nice != self._memory_top:
            self._memory_top = nice
            self.plots["memory"].setYRange(0, nice, padding=0)

    def _apply_palette(self) -> None:
        """Axes, titles, legends and the prediction line in the palette's text colour."""
        pal = self.palette()
        fg: QColor = pal.color(QPalette.ColorRole.WindowText)
        for plot in self.plots.values():
            style_plot(plot, fg)
        backdrop = QColor(pal.color(QPalette.ColorRole.Window))
        backdrop.setAlpha(200)  # legends sit inside the plots: keep the curves under them legible
        for legend in self.legends:
            legend.setBrush(pg.mkBrush(backdrop))
            style_legend(legend, fg)
        self.predicted.setPen(pg.mkPen(fg, width=1.5, style=Qt.PenStyle.DashLine))
        self.predicted.label.setColor(fg)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        # Follow a live light/dark switch; Qt also sends one from the base constructor, before our items.
        if event.type() == QEvent.Type.PaletteChange and getattr(self, "_ready", False):
            self._apply_palette()
        super().changeEvent(event)
