"""Every page's chart follows a live light/dark switch through the one hook in
planner/gui/common/chart_style.follow_palette (issue 14.4): axes, legends, "no data yet" notes
and the chart's own dashed lines take the new text colour; data series keep theirs."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtGui import QColor, QPalette  # noqa: E402

from planner.gui.hardware.chart import MemoryChart  # noqa: E402
from planner.gui.plan.chart import PlanChart  # noqa: E402
from planner.gui.runs.chart import ReplayChart  # noqa: E402
from planner.gui.train.charts import TrainCharts  # noqa: E402

LIGHT_TEXT = QColor("#e6e6e6")


def _plots(chart):
    if isinstance(chart, TrainCharts):
        return list(chart.plots.values())
    if isinstance(chart, ReplayChart):
        return [chart.loss_plot.getPlotItem(), chart.memory_plot.getPlotItem()]
    return [chart.getPlotItem()]


def _dashed(chart):
    """The lines drawn in the text colour, as (name, pen)."""
    if isinstance(chart, PlanChart):
        return [("gpu line", chart.gpu_line.pen), ("gpu key", chart.gpu_key.opts["pen"])]
    if isinstance(chart, MemoryChart):
        return [("host RAM", chart.host_curve.opts["pen"])]
    return [("prediction", chart.prediction.line.pen)]


def _notes(chart):
    if isinstance(chart, TrainCharts):
        return list(chart.empty_notes.values())
    if isinstance(chart, ReplayChart):
        return chart.empty_notes
    return [chart.empty_note] if isinstance(chart, MemoryChart) else []


@pytest.mark.parametrize("make", [PlanChart, TrainCharts, ReplayChart, MemoryChart], ids=lambda c: c.__name__)
def test_a_palette_change_restyles_the_chart(qtbot, make):
    chart = make()
    qtbot.addWidget(chart)
    if isinstance(chart, MemoryChart):
        chart.set_series(["GPU 0"])
    dark = QPalette(chart.palette())
    assert dark.color(QPalette.ColorRole.WindowText) != LIGHT_TEXT
    dark.setColor(QPalette.ColorRole.WindowText, LIGHT_TEXT)
    dark.setColor(QPalette.ColorRole.Window, QColor("#2b2b2b"))
    chart.setPalette(dark)
    for plot in _plots(chart):
        for side in ("left", "bottom"):
            assert plot.getAxis(side).textPen().color() == LIGHT_TEXT
    for name, pen in _dashed(chart):
        assert pen.color() == LIGHT_TEXT, name
    for note in _notes(chart):
        assert LIGHT_TEXT.name() in note.label.item.toHtml()
