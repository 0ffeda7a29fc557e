"""The Train page's live charts: loss, learning rate, tokens/s and memory against the prediction.

Every curve is created once (a rank's memory curve when a run first has that rank);
:meth:`TrainCharts.show_model` only calls ``setData`` (DESIGN.md), and
the page calls it on a ~10 Hz timer only when the run model changed. Long runs stay cheap with
``setDownsampling(auto=True)`` and ``setClipToView(True)`` (the x values are sorted steps).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from planner.gui.common.chart_style import (
    LEGEND_ROW,
    RSS_LABEL,
    EmptyNote,
    PredictionLine,
    follow_palette,
    keep_whole,
    legend_below,
    rss_key,
    series_colour,
    set_entries,
    style_legend,
    style_plot,
)
from planner.gui.train.run_model import RunModel, Series
from planner.units import GiB

# Tableau 10, as the other pages: distinguishable on light and dark backgrounds.
BLUE, ORANGE, GREEN, RED, TEAL, PURPLE, GREY = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                                "#b07aa1", "#bab0ac")


_NICE = (1, 1.5, 2, 3, 4, 5, 6, 8)
"""Memory axis tops, as the Hardware page: 1-2-5 style steps."""
MIN_VIEW = (120, 70)
"""Each data area's smallest size (px): below it a curve no longer shows a trend."""


def _xy(series: Series, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    # new arrays each frame: the model's lists keep growing in place
    return np.asarray(series.x, dtype=float), np.asarray(series.y, dtype=float) / scale


class TrainCharts(pg.GraphicsLayoutWidget):
    """Four plots in a 2x2 grid sharing the step axis; legends under the plots list only what is drawn."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setBackground(None)  # transparent: the window's palette shows through
        self.ci.layout.setSpacing(4)
        self.plots: dict[str, pg.PlotItem] = {}
        self.legends: list[pg.LegendItem] = []
        loss = self._plot("loss", 0, 0, "loss", legend_columns=3)
        lr = self._plot("lr", 0, 1, "learning rate")
        tps = self._plot("tps", 1, 0, "tokens/s")
        mem = self._plot("memory", 1, 1, "memory (GiB)", legend_columns=2)
        for plot in (lr, tps, mem):
            plot.setXLink(loss)  # one step range for all four: zooming one zooms all

        self.loss_raw = self._curve(loss, pg.mkPen(GREY, width=1))
        self.loss_ema = self._curve(loss, pg.mkPen(BLUE, width=2.5))
        self.eval_loss = pg.PlotDataItem(pen=None, symbol="o", symbolSize=8, symbolBrush=ORANGE, symbolPen=None)
        loss.addItem(self.eval_loss)
        self.lr = self._curve(lr, pg.mkPen(GREEN, width=2))
        self.tokens_per_s = self._curve(tps, pg.mkPen(PURPLE, width=1.5))
        self.peak_alloc = self._curve(mem, pg.mkPen(BLUE, width=2))
        self.peak_reserved = self._curve(mem, pg.mkPen(TEAL, width=2))
        self.rss = self._curve(mem, pg.mkPen(ORANGE, width=2))
        self.device_used = self._curve(mem, pg.mkPen(RED, width=2))
        self.prediction = PredictionLine(mem)
        self.predicted = self.prediction.line
        # like with like on a GPU: reserved against predicted reserved, NVML against predicted device
        # used, each dashed in its measured curve's colour (on the CPU all three predictions are one)
        self.prediction_reserved = PredictionLine(mem)
        self.prediction_device = PredictionLine(mem)
        self.rank_curves: list[pg.PlotDataItem] = []
        """One per rank of a multi-process run, made when a run first has that many ranks, then reused."""
        self.empty_notes = {key: EmptyNote(plot) for key, plot in self.plots.items()}
        self._memory_legend = self.legends[-1]
        self._memory_top = 0.0
        follow_palette(self, self._restyle)
        self._fit()

    def _plot(self, key: str, row: int, col: int, title: str, legend_columns: int = 0) -> pg.PlotItem:
        plot = self.addPlot(row=row, col=col)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setTitle(title)
        plot.setLabel("bottom", "step")
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        plot.getViewBox().setMinimumSize(*MIN_VIEW)
        if legend_columns:
            self.legends.append(legend_below(plot, legend_columns))
        self.plots[key] = plot
        return plot

    @staticmethod
    def _curve(plot: pg.PlotItem, pen: object) -> pg.PlotDataItem:
        curve = plot.plot(pen=pen)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        return curve

    def _rank_curve(self, rank: int) -> pg.PlotDataItem:
        while len(self.rank_curves) <= rank:
            # the memory plot's other curves keep their colours: GPU 0 takes peak allocated's blue
            colour = series_colour(len(self.rank_curves), taken=(TEAL, ORANGE, RED))
            self.rank_curves.append(self._curve(self.plots["memory"], pg.mkPen(colour, width=2)))
        return self.rank_curves[rank]

    def show_model(self, model: RunModel) -> None:
        """Feed every curve from the model (called on the page's timer, only after a change)."""
        loss_entries = []
        for curve, series, name in ((self.loss_raw, model.loss, "loss"),
                                    (self.loss_ema, model.loss_ema, "smoothed (EMA)"),
                                    (self.eval_loss, model.eval_loss, "eval loss"),
                                    (self.lr, model.lr, None), (self.tokens_per_s, model.tokens_per_s, None)):
            curve.setData(*_xy(series))
            if name and len(series) > 0:  # an empty eval series gets no legend key
                loss_entries.append((curve, name))
        ranks = model.rank_memory()
        memory_entries = []
        # Several ranks: one curve each replaces the run-wide curve of the same measure (their max).
        # On the CPU torch reports no allocator peaks (zeros): leave those curves empty rather than
        # draw a flat line at 0 that reads as "no memory used".
        for curve, series, kind, name in (
                (self.peak_alloc, model.peak_alloc, "peak_alloc", "peak allocated (torch)"),
                (self.peak_reserved, model.peak_reserved, None, "peak reserved (torch)"),
                (self.rss, model.rss, "rss", RSS_LABEL),
                (self.device_used, model.device_used, None, "fullest GPU, NVML")):
            shown = any(series.y) and kind != ranks.kind
            curve.setData(*(_xy(series, GiB) if shown else ([], [])))
            if shown:
                memory_entries.append((curve, name))
        for rank, (label, series) in enumerate(ranks.curves):
            curve = self._rank_curve(rank)
            shown = any(series.y)
            curve.setData(*(_xy(series, GiB) if shown else ([], [])))
            if shown:
                memory_entries.append((curve, label))
        for curve in self.rank_curves[len(ranks.curves):]:  # a run with fewer ranks than the last one
            curve.setData([], [])
        has_steps = len(model.loss) > 0 or len(model.lr) > 0 or bool(memory_entries)
        # the run-wide series are the ranks' maxima: they set the axis even while hidden
        # the axis fits what is compared with the predictions; an RSS far above it (a CPU run's whole
        # Python process) would flatten that comparison: it runs off the top, its key saying how high
        top = max((max(s.y) for s in (model.peak_alloc, model.peak_reserved, model.device_used) if s.y), default=0.0)
        rss_top = max(model.rss.y, default=0.0)
        self.prediction.set_peak(model.predicted_peak_bytes, shown=has_steps, end=model.end)
        extra = []
        for line, predicted, curve, what in (
                (self.prediction_reserved, model.predicted_reserved_bytes, self.peak_reserved, "reserved"),
                (self.prediction_device, model.predicted_device_bytes, self.device_used, "device used")):
            # only beside its measured curve, and only when it says something the allocated line does not
            shown = bool(predicted) and predicted != model.predicted_peak_bytes and curve.xData is not None \
                and len(curve.xData) > 0
            line.set_peak(predicted if shown else None, shown=has_steps)
            if shown and predicted:
                extra.append(line.entry_of(what))
                top = max(top, predicted)
        if model.predicted_peak_bytes:
            memory_entries.append(self.prediction.entry_of("allocated" if extra else ""))
            top = max(top, self.prediction.peak_bytes or 0)
        memory_entries += extra
        if not top:
            top = rss_top
        memory_entries = [(c, rss_key(rss_top, top * 1.08)) if c is self.rss else (c, lab)
                          for c, lab in memory_entries]
        for key, series in (("loss", model.loss), ("lr", model.lr), ("tps", model.tokens_per_s)):
            self.empty_notes[key].set_empty(len(series) == 0)
        self.empty_notes["memory"].set_empty(not has_steps)
        self._set_memory_top(top / GiB)
        changed = set_entries(self.legends[0], loss_entries)
        if set_entries(self._memory_legend, memory_entries) or changed:
            self._fit()

    def _fit(self) -> None:
        """Plots side by side get legend rows of one height, so their data areas and x axes line up;
        then the widget keeps room for the whole grid."""
        for pair in (("loss", "lr"), ("tps", "memory")):
            plots = [self.plots[key] for key in pair]
            height = max((p.legend.effectiveSizeHint(Qt.SizeHint.MinimumSize).height()
                          for p in plots if p.legend is not None), default=0.0)
            for plot in plots:
                plot.layout.setRowFixedHeight(LEGEND_ROW, height)
        keep_whole(self, self.ci, self.legends)

    def _set_memory_top(self, top: float) -> None:
        """Memory from 0 (a flat line must not read as a swing) to a round value above the data and
        the prediction; the axis changes only when the data crosses one."""
        nice = next((m * 10**k for k in range(-3, 6) for m in _NICE if m * 10**k >= top * 1.08), top * 1.08)
        if top > 0 and nice != self._memory_top:
            self._memory_top = nice
            self.plots["memory"].setYRange(0, nice, padding=0)

    def _restyle(self, fg: QColor) -> None:
        """Axes, titles, legends, the "no data yet" notes and the prediction line in the palette's text colour."""
        for plot in self.plots.values():
            style_plot(plot, fg)
        for legend in self.legends:
            style_legend(legend, fg)
        for note in self.empty_notes.values():
            note.set_colour(fg)
        self.prediction.set_colour(fg)
        self.prediction_reserved.set_colour(QColor(TEAL))
        self.prediction_device.set_colour(QColor(RED))
