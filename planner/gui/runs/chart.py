"""The Runs page's replay: loss and memory (measured against predicted) of one run, by step.

``Replay`` turns events into series (no Qt) and grows as a live run writes more; ``ReplayChart``
creates its curves once and only calls ``setData`` (DESIGN.md), with peak downsampling and
clip-to-view so a 100k-step history draws as fast as a short one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QSizePolicy, QWidget

from planner.gui.common.chart_style import (
    RSS_LABEL,
    EmptyNote,
    PredictionLine,
    follow_palette,
    keep_whole,
    legend_below,
    rss_key,
    set_entries,
    style_legend,
    style_plot,
)
from planner.units import GiB
from trainer.protocol import Event

# Tableau 10, as elsewhere
LOSS, EVAL, MEASURED, RESERVED, DEVICE, RSS = "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1"
MIN_VIEW = (160, 90)
"""The data area's smallest size (px): below it the curves no longer show a trend."""


class Replay:
    """Step series of one run. A resumed run repeats the steps after its checkpoint: the later
    session's events replace the earlier ones from that step on, so the curve never runs backwards."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.alloc: list[float] = []
        self.reserved: list[float] = []
        self.rss: list[float] = []
        self.device_used: list[float] = []
        """NVML-seen GPU memory per step (``device_used_bytes``); NaN where a step has none."""
        self.eval_steps: list[int] = []
        self.eval_loss: list[float] = []
        self.predicted: int | None = None
        """Predicted peak allocated (the measured peak allocated's counterpart)."""
        self.predicted_reserved: int | None = None
        self.predicted_device: int | None = None
        self.device: str | None = None
        """cuda | cpu from the start event; None in an older history."""
        self.end: dict[str, object] = {}
        """The last end event's fields (the prediction for the batch at the measured peak)."""

    def add(self, events: Iterable[Event]) -> None:
        for e in events:
            if e.kind == "start":
                self.predicted = _bytes(e.get("predicted_peak_bytes"))
                self.predicted_reserved = _bytes(e.get("predicted_reserved_bytes"))
                self.predicted_device = _bytes(e.get("predicted_device_bytes"))
                self.device = str(e["device"]) if isinstance(e.get("device"), str) else self.device
            elif e.kind == "step" and isinstance(e.get("step"), (int, float)):
                step = int(e["step"])  # type: ignore[arg-type]
                if self.steps and step <= self.steps[-1]:
                    keep = int(np.searchsorted(self.steps, step))
                    for series in (self.steps, self.loss, self.alloc, self.reserved, self.rss, self.device_used):
                        del series[keep:]
                    cut = next((i for i, s in enumerate(self.eval_steps) if s >= step), len(self.eval_steps))
                    del self.eval_steps[cut:], self.eval_loss[cut:]
                self.steps.append(step)
                self.loss.append(_num(e.get("loss")))
                self.alloc.append(_num(e.get("peak_alloc_bytes")))
                self.reserved.append(_num(e.get("peak_reserved_bytes")))
                self.rss.append(_num(e.get("rss_bytes")))
                self.device_used.append(_num(e.get("device_used_bytes")))
            elif e.kind == "eval" and isinstance(e.get("step"), (int, float)):
                self.eval_steps.append(int(e["step"]))  # type: ignore[arg-type]
                self.eval_loss.append(_num(e.get("eval_loss")))
            elif e.kind == "end":
                self.end = dict(e.fields)

    @property
    def on_gpu(self) -> bool:
        """The start event says; an older history without it: a CUDA peak was reported."""
        return self.device == "cuda" if self.device else any(a > 0 for a in self.alloc)

    @property
    def has_alloc(self) -> bool:
        """A measured peak allocated (CUDA's, or a CPU run's live tensor bytes) exists."""
        return any(a > 0 for a in self.alloc)


def _bytes(v: object) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def _num(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


class ReplayChart(QWidget):
    """Loss beside memory, x (step) linked; the prediction is a dashed line. Legends sit under the
    plots (never on a curve or the dashed line) and list only what is drawn."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_plot = self._plot("loss")
        self.memory_plot = self._plot("memory (GiB)")
        for plot in (self.loss_plot, self.memory_plot):
            plot.setLabel("bottom", "step")
        self.memory_plot.setXLink(self.loss_plot)
        self.loss_legend = legend_below(self.loss_plot.getPlotItem(), columns=2)
        self.memory_legend = legend_below(self.memory_plot.getPlotItem(), columns=2)
        # created once; every update is setData
        self.loss_curve = self._curve(self.loss_plot, LOSS)
        self.eval_curve = self.loss_plot.plot([], [], pen=None, symbol="o", symbolSize=6,
                                              symbolBrush=EVAL, symbolPen=None)
        # the legend draws the scatter's own brush, which setData leaves at the default while empty
        self.eval_curve.scatter.setBrush(pg.mkBrush(EVAL))
        self.eval_curve.scatter.setPen(pg.mkPen(None))
        self.measured_curve = self._curve(self.memory_plot, MEASURED)
        self.reserved_curve = self._curve(self.memory_plot, RESERVED)
        self.device_curve = self._curve(self.memory_plot, DEVICE)
        self.rss_curve = self._curve(self.memory_plot, RSS)
        self.prediction = PredictionLine(self.memory_plot.getPlotItem())
        self.predicted_line = self.prediction.line
        # on a GPU, reserved and NVML's device used each against their own prediction, dashed in
        # the measured curve's colour (on the CPU the three predictions are one number)
        self.prediction_reserved = PredictionLine(self.memory_plot.getPlotItem())
        self.prediction_device = PredictionLine(self.memory_plot.getPlotItem())
        self.empty_notes = [EmptyNote(plot.getPlotItem()) for plot in (self.loss_plot, self.memory_plot)]
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.loss_plot, 1)
        layout.addWidget(self.memory_plot, 1)
        follow_palette(self, self._restyle)
        self.clear()

    def _plot(self, label: str) -> pg.PlotWidget:
        plot = pg.PlotWidget(background=None)
        plot.setMenuEnabled(False)
        plot.hideButtons()
        plot.setLabel("left", label)
        plot.getAxis("left").enableAutoSIPrefix(False)  # GiB stay GiB, not "(x0.001)"
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        plot.getViewBox().setMinimumSize(*MIN_VIEW)
        return plot

    @staticmethod
    def _curve(plot: pg.PlotWidget, colour: str) -> pg.PlotDataItem:
        curve = plot.plot([], [], pen=pg.mkPen(colour, width=2), connect="finite")
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        return curve

    def show_replay(self, replay: Replay) -> None:
        x = np.asarray(replay.steps, dtype=float)
        self.loss_curve.setData(x, np.asarray(replay.loss, dtype=float))
        self.eval_curve.setData(np.asarray(replay.eval_steps, dtype=float), np.asarray(replay.eval_loss, dtype=float))
        has_steps = bool(replay.steps)
        device = np.asarray(replay.device_used, dtype=float)
        # measured curve, its label, and the prediction of the same kind (None: the dashed allocated line)
        measures = (
            (self.measured_curve, replay.alloc, replay.has_alloc, "peak allocated", None, None),
            (self.reserved_curve, replay.reserved, replay.on_gpu and any(r > 0 for r in replay.reserved),
             "reserved", self.prediction_reserved, replay.predicted_reserved),
            (self.device_curve, replay.device_used, replay.on_gpu and bool(np.nansum(device) > 0),
             "device used, NVML", self.prediction_device, replay.predicted_device),
            (self.rss_curve, replay.rss, any(r > 0 for r in replay.rss), RSS_LABEL, None, None),
        )
        memory, extra, top = [], [], 0.0
        for curve, series, shown, label, line, predicted in measures:
            values = np.asarray(series, dtype=float) / GiB
            curve.setData(x if shown else [], values if shown else [])
            curve.setVisible(shown)
            if shown and has_steps:
                memory.append((curve, label))
                if curve is not self.rss_curve and not np.isnan(values).all():
                    top = max(top, float(np.nanmax(values)))
            if line is not None:
                differs = shown and bool(predicted) and predicted != replay.predicted
                line.set_peak(predicted if differs else None, shown=has_steps)
                if differs and predicted:
                    extra.append(line.entry_of(label.split(",")[0]))
                    top = max(top, predicted / GiB)
        self.prediction.set_peak(replay.predicted, shown=has_steps, end=replay.end)
        if self.prediction.peak_bytes:
            top = max(top, self.prediction.peak_bytes / GiB)
        for note in self.empty_notes:
            note.set_empty(not has_steps)
        # the axis fits what is compared; an RSS far above it (a CPU run's whole Python process)
        # would flatten the comparison: it runs off the top, its key saying how high it is
        rss = [r for r in replay.rss if r > 0]
        if not top and rss:
            top = max(rss) / GiB
        floor = 1 / 1024  # 1 MiB: a CPU demo's tensors are tens of MiB, and must not lie flat at 0
        if rss:
            memory = [(c, rss_key(max(rss), max(top, floor) * 1.1 * GiB)) if c is self.rss_curve else (c, lab)
                      for c, lab in memory]
        self.memory_plot.setYRange(0, max(top, floor) * 1.1, padding=0)
        loss = [(self.loss_curve, "train loss")] if has_steps else []
        if replay.eval_steps:  # no eval points, no "eval loss" key
            loss.append((self.eval_curve, "eval loss"))
        if has_steps or replay.predicted:
            memory.append(self.prediction.entry_of("allocated" if extra else ""))
        memory += extra
        for plot, legend, entries in ((self.loss_plot, self.loss_legend, loss),
                                      (self.memory_plot, self.memory_legend, memory)):
            if set_entries(legend, entries):
                keep_whole(plot, plot.getPlotItem(), [legend])

    def clear(self) -> None:
        self.show_replay(Replay())

    def _restyle(self, fg: QColor) -> None:
        """Axes, legends and the prediction line in the palette's text colour (light or dark)."""
        for plot, legend in ((self.loss_plot, self.loss_legend), (self.memory_plot, self.memory_legend)):
            style_plot(plot.getPlotItem(), fg)
            style_legend(legend, fg)
        for note in self.empty_notes:
            note.set_colour(fg)
        self.prediction.set_colour(fg)
        self.prediction_reserved.set_colour(QColor(RESERVED))
        self.prediction_device.set_colour(QColor(DEVICE))
