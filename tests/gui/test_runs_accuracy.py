"""Runs page (issue 16): the Ratio cell's kind, colours and tooltip, the accuracy line, the export."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared run directories
from runtools import GiB, MiB, finished_run  # noqa: E402

from planner.gui.runs.model import COLUMN, HEADER_TIPS, RATIO_COLOURS  # noqa: E402
from planner.gui.runs.page import RunsPage  # noqa: E402
from planner.gui.state import AppState  # noqa: E402

GREEN, AMBER, RED = "#2e9e44", "#c28a00", "#d83b3b"


@pytest.fixture
def page(qtbot, tmp_path):
    root = tmp_path / "runs"
    # ratio measured / predicted: 1.10 green (edge), 0.80 amber, 1.25 amber (edge), 1.30 red, 0.70 red
    for name, measured, predicted in (("edge-green", 110, 100), ("amber-low", 80, 100), ("edge-amber", 125, 100),
                                      ("red-high", 130, 100), ("red-low", 70, 100)):
        finished_run(root, name, "lora", measured=measured * MiB, predicted=predicted * MiB)
    # a CPU run: its process is 2 GiB of Python and torch, its tensors 45 MiB against 50 MiB predicted
    finished_run(root, "cpu", "full", measured=45 * MiB, predicted=50 * MiB, device="cpu", rss=2 * GiB,
                 phase="backward")
    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(root)
    page = RunsPage(state)
    qtbot.addWidget(page)
    yield page
    page.loader.wait()


def _row(page: RunsPage, name: str) -> int:
    proxy = page.proxy
    return next(r for r in range(proxy.rowCount()) if proxy.index(r, COLUMN["Run"]).data() == name)


def _ratio_cell(page: RunsPage, name: str, role=Qt.ItemDataRole.DisplayRole):
    return page.proxy.index(_row(page, name), COLUMN["Ratio"]).data(role)


@pytest.mark.parametrize("name, text, colour", [
    ("edge-green", "1.10\u00d7", GREEN), ("amber-low", "0.80\u00d7", AMBER), ("edge-amber", "1.25\u00d7", AMBER),
    ("red-high", "1.30\u00d7", RED), ("red-low", "0.70\u00d7", RED), ("cpu", "0.90\u00d7", GREEN)])
def test_ratio_cells_are_coloured_by_how_far_from_one(page, name, text, colour):
    assert _ratio_cell(page, name) == text
    assert _ratio_cell(page, name, Qt.ItemDataRole.ForegroundRole).name() == colour


def test_a_cpu_run_compares_tensors_not_rss(page):
    row = _row(page, "cpu")
    assert page.proxy.index(row, COLUMN["Peak"]).data() == "45.0 MiB"  # tensors, not 2 GiB of RSS
    tip = _ratio_cell(page, "cpu", Qt.ItemDataRole.ToolTipRole)
    assert "peak allocated" in tip and "predicted peak allocated" in tip and "backward" in tip
    assert "live tensor bytes on the CPU" in tip
    row_tip = page.proxy.index(row, COLUMN["Run"]).data(Qt.ItemDataRole.ToolTipRole)
    assert "host RSS 2.00 GiB" in row_tip and "not comparable" in row_tip


def test_header_tip_says_what_the_ratio_compares():
    assert "peak allocated / predicted peak allocated" in HEADER_TIPS["Ratio"]
    assert set(RATIO_COLOURS.values()) == {GREEN, AMBER, RED}


def test_the_accuracy_line_summarises_the_runs(page):
    # errors (predicted / measured - 1): -9.1, +25.0, -20.0, -23.1, +42.9, +11.1 %; median |e| 21.5 %
    assert page.accuracy_label.text() == (
        "Your runs: 6 with measurements \u00b7 median |error| 21.5% \u00b7 worst +42.9% (LoRA)")
    assert not page.accuracy_label.isHidden()


def test_export_writes_the_measurements(page, tmp_path):
    out = tmp_path / "export" / "mine.csv"
    page.choose_csv = lambda start: out
    assert page.export_button.isEnabled()
    page.export_button.click()
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"allocated"}
    assert "Exported 6 measurement(s)" in page.message.text()
    page.choose_csv = lambda start: tmp_path  # a folder: refused, said on the page
    page.export_button.click()
    assert page.message.text().startswith("Not exported:")
    page.choose_csv = lambda start: None  # cancelled: nothing happens
    page.export_button.click()
    assert page.message.text().startswith("Not exported:")


def _cuda_events(device_used: bool = True):
    from trainer.protocol import decode, encode

    start = encode("start", 0, model="m", method="lora", params_total=1, params_trainable=1, max_steps=2,
                   run_dir="x", predicted_peak_bytes=4 * GiB, predicted_reserved_bytes=5 * GiB,
                   predicted_device_bytes=6 * GiB, device="cuda")
    steps = [encode("step", n, step=n, epoch=0.5 * n, loss=1.0, lr=1e-4, grad_norm=1.0, tokens_per_s=1.0,
                    peak_alloc_bytes=4 * GiB, peak_reserved_bytes=5 * GiB, rss_bytes=3 * GiB,
                    **({"device_used_bytes": 6 * GiB} if device_used else {})) for n in (1, 2)]
    return [decode(line) for line in [start, *steps]]


def test_replay_chart_sets_each_gpu_measure_against_its_own_prediction(qtbot):
    from planner.gui.runs.chart import RSS_LABEL, Replay, ReplayChart

    chart = ReplayChart()
    qtbot.addWidget(chart)
    replay = Replay()
    replay.add(_cuda_events())
    chart.show_replay(replay)
    labels = [label.text for _, label in chart.memory_legend.items]
    assert labels == ["peak allocated", "reserved", "device used, NVML", RSS_LABEL, "predicted allocated 4.00 GiB",
                      "predicted reserved 5.00 GiB", "predicted device used 6.00 GiB"]
    assert chart.prediction_reserved.line.isVisible() and chart.prediction_device.line.isVisible()


def test_train_chart_sets_each_gpu_measure_against_its_own_prediction(qtbot):
    from planner.gui.train.charts import RSS_LABEL, TrainCharts
    from planner.gui.train.run_model import RunModel

    model = RunModel()
    for e in _cuda_events():
        model.fold(e)
    model.fold_device_memory(GiB)  # the page's sampling: ignored, the steps carry NVML's figure
    assert model.device_used.y == [6 * GiB, 6 * GiB]
    charts = TrainCharts()
    qtbot.addWidget(charts)
    charts.show_model(model)
    labels = [label.text for _, label in charts._memory_legend.items]
    assert labels == ["peak allocated (torch)", "peak reserved (torch)", RSS_LABEL, "fullest GPU, NVML",
                      "predicted allocated 4.00 GiB", "predicted reserved 5.00 GiB", "predicted device used 6.00 GiB"]


def _padded_cpu_events():
    """A CPU run whose batches were padded to 21 of max_seq_len 64: the end event says so."""
    from trainer.protocol import decode, encode

    start = encode("start", 0, model="m", method="qlora", params_total=1, params_trainable=1, max_steps=2,
                   run_dir="x", predicted_peak_bytes=26 * MiB, predicted_reserved_bytes=26 * MiB,
                   predicted_device_bytes=26 * MiB, device="cpu")
    steps = [encode("step", n, step=n, epoch=0.5 * n, loss=1.0, lr=1e-4, grad_norm=1.0, tokens_per_s=1.0,
                    peak_alloc_bytes=15 * MiB, peak_reserved_bytes=0, rss_bytes=600 * MiB) for n in (1, 2)]
    end = encode("end", 3, status="completed", steps=2, runtime_s=3.0, output_dir="x", peak_alloc_bytes=15 * MiB,
                 peak_batch_size=8, peak_seq_len=21, predicted_at_peak_bytes=16 * MiB)
    evaluation = encode("eval", 2.5, step=2, eval_loss=1.2)
    return [decode(line) for line in [start, *steps, evaluation, end]]


def test_the_replay_chart_compares_the_peak_with_the_prediction_for_its_batch(qtbot):
    """The plan predicts max_seq_len; a padded batch is shorter. Once the run has ended, the dashed
    line is the prediction for the batch at the measured peak, and its key says which."""
    from planner.gui.runs.chart import Replay, ReplayChart

    replay = Replay()
    replay.add(_padded_cpu_events())
    chart = ReplayChart()
    qtbot.addWidget(chart)
    chart.show_replay(replay)
    assert list(chart.eval_curve.yData) == [1.2]  # the end event follows an evaluation: each keeps its own
    assert chart.prediction.line.value() == pytest.approx(16 * MiB / GiB)
    assert "predicted 0.02 GiB (8\u00d721)" in [label.text for _, label in chart.memory_legend.items]


def test_the_train_chart_compares_the_peak_with_the_prediction_for_its_batch(qtbot):
    from planner.gui.train.charts import TrainCharts
    from planner.gui.train.run_model import RunModel

    model = RunModel()
    for e in _padded_cpu_events():
        model.fold(e)
    charts = TrainCharts()
    qtbot.addWidget(charts)
    charts.show_model(model)
    assert charts.prediction.line.value() == pytest.approx(16 * MiB / GiB)
    assert "predicted 0.02 GiB (8\u00d721)" in [label.text for _, label in charts._memory_legend.items]
