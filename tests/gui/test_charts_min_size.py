"""Every chart stays readable at the window's minimum size (issue 13 point 8).

The main window is opened at its minimum size with a plan for Llama-3.1-8B and a replayed run,
each page is rendered (the PNGs go to the test's tmp dir, and to $CHART_SCREENSHOTS if set, for a
human look), and the pictures' geometry is checked: legend texts whole and inside the view, no
legend on a data area or a plotted point, plan totals off the dashed GPU line, no made-up axes on
an empty chart, no legend key for a series with no points.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, QSettings
from PySide6.QtGui import QFont, QFontMetricsF, QImage, QPainter
from test_runs_page import START, make_run, step

from planner.gui.app import settle
from planner.gui.common.chart_style import EMPTY_TEXT
from planner.gui.hardware.chart import MemoryChart
from planner.gui.hardware.model import History
from planner.gui.plan.chart import PlanChart
from planner.gui.plan.model import FormValues, compute_plan
from planner.gui.runs.chart import Replay, ReplayChart
from planner.gui.state import AppState
from planner.gui.train.charts import TrainCharts
from planner.gui.train.run_model import replay as run_model_of
from planner.gui.window import PAGE_KEYS, MainWindow
from trainer.protocol import Event, decode, encode

MODEL = "meta-llama/Llama-3.1-8B"


# -- geometry checks, on any page ----------------------------------------------------------------
def views(widget) -> list[pg.GraphicsView]:
    return [v for v in widget.findChildren(pg.GraphicsView) if v.isVisible()]


def scene_items(view: pg.GraphicsView, kind: type) -> list:
    return [i for i in view.scene().items() if isinstance(i, kind) and i.isVisible()]


def visible_rect(view: pg.GraphicsView) -> QRectF:
    """The part of the scene the view shows."""
    return view.mapToScene(view.viewport().rect()).boundingRect().adjusted(-0.5, -0.5, 0.5, 0.5)


def data_area(vb: pg.ViewBox) -> QRectF:
    """The view box's own rectangle in the scene (its bounding rect reaches half a pixel beyond)."""
    return vb.mapRectToScene(vb.rect())


def text_width(label: pg.LabelItem) -> float:
    font = QFont(label.item.font())
    size = label.opts.get("size")
    if size and size.endswith("pt"):
        font.setPointSizeF(float(size[:-2]))
    return QFontMetricsF(font).horizontalAdvance(label.text)


def legend_problems(view: pg.GraphicsView) -> list[str]:
    problems = []
    shown = visible_rect(view)
    areas = [data_area(p.getViewBox()) for p in scene_items(view, pg.PlotItem)]
    for legend in scene_items(view, pg.LegendItem):
        box = legend.sceneBoundingRect()
        for _sample, label in legend.items:
            if text_width(label) > label.width() + 0.01:
                problems.append(f"{label.text!r} is {text_width(label):.1f} px wide in a {label.width():.1f} px box")
            if not shown.contains(label.sceneBoundingRect()):
                problems.append(f"{label.text!r} is cut at the view's edge")
        if legend.items and any(box.intersects(area) for area in areas):
            problems.append(f"legend {[label.text for _, label in legend.items]} lies on a data area")
        for plot in scene_items(view, pg.PlotItem):
            vb = plot.getViewBox()
            for curve in plot.listDataItems():
                x, y = curve.getData()
                if x is None:
                    continue
                for px, py in zip(x, y):
                    if np.isfinite(px) and np.isfinite(py) and box.contains(vb.mapViewToScene(QPointF(px, py))):
                        problems.append(f"a point of a curve lies under the legend at ({px:g}, {py:g})")
                        break
            for line in (i for i in plot.items if isinstance(i, pg.InfiniteLine) and i.isVisible()):
                y = vb.mapViewToScene(QPointF(0, line.value())).y()
                if box.top() <= y <= box.bottom() and box.intersects(data_area(vb)):
                    problems.append("a dashed line strikes through the legend")
    return problems


def cut_by_ancestors(view: pg.GraphicsView) -> list[str]:
    """The view lies whole inside each widget that holds it (the window's layouts gave it its minimum)."""
    problems, parent = [], view.parentWidget()
    while parent is not None:
        rect = QRect(view.mapTo(parent, QPoint(0, 0)), view.size())
        if not parent.rect().contains(rect):
            problems.append(f"{type(view).__name__} is cut by a {type(parent).__name__}: {rect} in {parent.rect()}")
        parent = parent.parentWidget()
    return problems


def tick_texts(plot: pg.PlotItem, name: str) -> list[str]:
    axis = plot.getAxis(name)
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in (specs[2] if specs else [])]


def total_problems(chart: PlanChart) -> list[str]:
    """Plan totals: inside the view, and their glyphs off the dashed line's band."""
    vb = chart.getPlotItem().getViewBox()
    line_y = vb.mapViewToScene(QPointF(0, chart.gpu_line.value())).y()
    half = chart.gpu_line.pen.widthF() / 2
    problems = []
    for text in chart.totals:
        rect = text.sceneBoundingRect()
        margin = text.textItem.document().documentMargin()
        glyphs = rect.adjusted(0, margin, 0, -margin)
        if glyphs.top() <= line_y + half and glyphs.bottom() >= line_y - half:
            problems.append(f"{text.toPlainText()!r} is crossed by the GPU line")
        if not data_area(vb).adjusted(-0.5, -0.5, 0.5, 0.5).contains(rect):
            problems.append(f"{text.toPlainText()!r} is cut at the plot's edge")
    return problems


# -- the window at its minimum size ----------------------------------------------------------------
@pytest.fixture
def window(qtbot, tmp_path):
    root = tmp_path / "runs"
    run = make_run(root, "replayed", steps=30)  # GPU peaks, an eval point, a 4 GiB prediction
    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(root)
    w = MainWindow("plan", state=state)
    qtbot.addWidget(w)
    w.persist_geometry = False
    plan = w.pages["plan"]
    plan.form.model_box.setCurrentText(MODEL)
    w.show()
    state.open_run.emit(str(run))  # the Train page replays it; the Runs page selects the newest
    assert settle(w)
    yield w
    w.pages["runs"].loader.wait()


def shots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CHART_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize("page", PAGE_KEYS)
def test_every_chart_is_readable_at_the_minimum_window_size(window, tmp_path, page):
    window.show_page(page)
    for _ in range(5):  # a page's axes widen for their tick labels as they paint: a new minimum
        window.resize(window.minimumSizeHint())
        assert settle(window)
        if window.size() == window.minimumSizeHint():
            break
    assert window.size() == window.minimumSizeHint()
    assert window.grab().save(str(shots_dir(tmp_path) / f"min-{page}.png"), "PNG")
    charts = views(window.pages[page])
    assert charts, f"the {page} page shows a chart"
    problems = []
    for view in charts:
        problems += cut_by_ancestors(view)
        problems += legend_problems(view)
    if page == "plan":
        problems += total_problems(window.pages["plan"].chart)
    assert problems == []


def test_the_window_shows_the_representative_data(window):
    plan = window.pages["plan"]
    assert plan.plan is not None and plan.plan.model == MODEL
    runs_chart = window.pages["runs"].chart
    assert len(runs_chart.loss_curve.xData) == 30
    labels = [label.text for _, label in runs_chart.memory_legend.items]
    assert labels == ["peak allocated", "reserved", "host RSS (Python + torch, not comparable)", "predicted 4.00 GiB"]
    assert "eval loss" in [label.text for _, label in runs_chart.loss_legend.items]


# -- the Plan chart's totals and the GPU line -----------------------------------------------------------
@pytest.mark.parametrize("under", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("bar", [0, 1, 2, 3])
def test_a_total_just_under_the_gpu_line_moves_above_it(qtbot, bar, under):
    chart = PlanChart()
    qtbot.addWidget(chart)
    chart.resize(chart.minimumSize())
    chart.show()
    plan = compute_plan(FormValues(model=MODEL))
    gpu = plan.device_used_gib[bar] + under
    chart.show_plan(plan, (False, True, False, False), gpu, "title")
    qtbot.waitUntil(lambda: chart.getPlotItem().getViewBox().height() > 0)
    chart._layout_text()
    assert total_problems(chart) == []
    moved = [t.pos().y() > used + 1e-9 for t, used in zip(chart.totals, plan.device_used_gib)]
    assert moved[bar], "the total under the line was moved"
    # a moved total stays over its bar, above the line
    assert chart.totals[bar].pos().x() == bar and chart.totals[bar].pos().y() >= gpu


def test_the_gpu_size_is_in_the_legend_not_on_the_line(qtbot):
    chart = PlanChart()
    qtbot.addWidget(chart)
    chart.show_plan(compute_plan(FormValues(model=MODEL)), (False,) * 4, 79.6, "t")
    assert chart.legend.items[0][1].text == "your GPU: 79.6 GiB"
    assert getattr(chart.gpu_line, "label", None) is None


def test_a_long_title_is_elided_not_widening_the_chart(qtbot):
    chart = PlanChart()
    qtbot.addWidget(chart)
    chart.show()
    plan = compute_plan(FormValues(model=MODEL))
    chart.show_plan(plan, (False,) * 4, 24.0, "short")
    qtbot.wait(50)
    narrow = chart.minimumSize()
    chart.resize(narrow)
    title = "~/models/" + "a-very-long-folder-name/" * 8 + "model · 8.03B params"
    chart.show_plan(plan, (False,) * 4, 24.0, title)
    qtbot.wait(50)
    assert chart.minimumSize().width() <= narrow.width()
    shown = chart.getPlotItem().titleLabel.text
    assert "\u2026" in shown and shown.endswith("params")
    assert chart.getPlotItem().geometry().width() <= chart.viewport().width()


# -- legends list only what is drawn; empty charts say so -----------------------------------------------
def events(*lines: str) -> list[Event]:
    return [decode(line) for line in lines]


def test_runs_replay_lists_eval_loss_only_with_eval_points(qtbot):
    chart = ReplayChart()
    qtbot.addWidget(chart)
    replay = Replay()
    replay.add(events(encode("start", 0, **START), *(step(n) for n in range(1, 6))))
    chart.show_replay(replay)
    assert [label.text for _, label in chart.loss_legend.items] == ["train loss"]
    replay.add(events(encode("eval", 6, step=5, eval_loss=1.5)))
    chart.show_replay(replay)
    assert [label.text for _, label in chart.loss_legend.items] == ["train loss", "eval loss"]


def test_train_charts_list_eval_loss_only_with_eval_points(qtbot):
    charts = TrainCharts()
    qtbot.addWidget(charts)
    lines = [encode("start", 0, **START), *(step(n) for n in range(1, 6))]
    charts.show_model(run_model_of(lines))
    assert [label.text for _, label in charts.legends[0].items] == ["loss", "smoothed (EMA)"]
    charts.show_model(run_model_of(lines + [encode("eval", 6, step=5, eval_loss=1.5)]))
    assert "eval loss" in [label.text for _, label in charts.legends[0].items]


def test_empty_charts_say_so_instead_of_a_made_up_range(qtbot):
    replay_chart, train_charts, memory_chart = ReplayChart(), TrainCharts(), MemoryChart()
    for widget in (replay_chart, train_charts, memory_chart):
        qtbot.addWidget(widget)
        widget.show()
    memory_chart.set_series([])
    memory_chart.show_history(History(1, 10))
    plots = ([p.getPlotItem() for p in (replay_chart.loss_plot, replay_chart.memory_plot)]
             + list(train_charts.plots.values()) + [memory_chart.getPlotItem()])
    notes = replay_chart.empty_notes + list(train_charts.empty_notes.values()) + [memory_chart.empty_note]
    for plot, note in zip(plots, notes):
        assert note.label.isVisible() and note.label.text in (EMPTY_TEXT, "no sample yet")
        assert tick_texts(plot, "left") == [] and tick_texts(plot, "bottom") == []
    assert [label.text for _, label in replay_chart.memory_legend.items] == []

    replay = Replay()
    replay.add(events(encode("start", 0, **START), *(step(n) for n in range(1, 6))))
    replay_chart.show_replay(replay)
    train_charts.show_model(run_model_of([encode("start", 0, **START), *(step(n) for n in range(1, 6))]))
    for note in replay_chart.empty_notes + list(train_charts.empty_notes.values()):
        assert not note.label.isVisible()
    assert tick_texts(replay_chart.loss_plot.getPlotItem(), "left") != []
    assert tick_texts(train_charts.plots["memory"], "bottom") != []


def test_a_rebuilt_legend_deletes_its_old_keys_at_once(qtbot):
    """set_entries deletes a cleared legend's samples and labels itself (pyqtgraph 0.14, PySide6
    6.11 leave them to the cycle collector, which destroyed them mid-layout in a later test)."""
    import pyqtgraph as pg
    import shiboken6

    from planner.gui.common.chart_style import legend_below, set_entries

    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    curve = widget.plot([0, 1], [0, 1])
    legend = legend_below(widget.getPlotItem(), columns=1)
    assert set_entries(legend, [(curve, "before")])
    old = [part for pair in legend.items for part in pair]
    assert set_entries(legend, [(curve, "after")])
    assert not any(shiboken6.isValid(part) for part in old)
    assert [label.text for _, label in legend.items] == ["after"]
    assert (pg.__version__, __import__("PySide6").__version__) == ("0.14.0", "6.11.3")  # the versions checked
