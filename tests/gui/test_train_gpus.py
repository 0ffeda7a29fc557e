"""The Train page's GPU choice with a stand-in NVML (two GPUs, or none): checkboxes, sharding, the
config and environment a run gets, the Plan page's GPU count, and one memory curve per rank."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared stand-in NVML

from fake_nvml import A100, RTX4090, FakeNVMLError, fresh_nvml, install, make_pynvml  # noqa: E402,F401

from planner.gui.common.run_process import trainer_environment  # noqa: E402
from planner.gui.state import AppState  # noqa: E402
from planner.gui.train.charts import TrainCharts  # noqa: E402
from planner.gui.train.gpus import launch_env, mismatch_note, resume_gpus  # noqa: E402
from planner.gui.train.page import TrainPage  # noqa: E402
from planner.gui.train.run_model import replay  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.protocol import encode  # noqa: E402

GiB = 2**30


@pytest.fixture
def make_page(qtbot, tmp_path, monkeypatch):
    """A Train page on a machine whose NVML reports ``gpus`` (none: no driver)."""
    def _make(gpus: list[dict]) -> TrainPage:
        error = None if gpus else FakeNVMLError("NVML Shared Library Not Found")
        install(monkeypatch, make_pynvml(gpus=gpus, init_error=error))
        state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
        state.set_runs_root(tmp_path / "runs")
        page = TrainPage(state)
        qtbot.addWidget(page)
        return page
    return _make


@pytest.fixture
def two(make_page):
    return make_page([A100, RTX4090])


@pytest.fixture
def sources(tmp_path):
    model = tmp_path / "demo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    return model, data


def fill(page: TrainPage, model: Path, data: Path) -> None:
    page.form.model_edit.setText(str(model))
    page.form.dataset_edit.setText(str(data))


def test_one_checkbox_per_gpu_all_checked(two):
    devices = two.form.devices
    assert [c.text() for c in devices.checks] == ["GPU 0 · NVIDIA A100-SXM4-80GB · 80 GiB",
                                                  "GPU 1 · NVIDIA GeForce RTX 4090 · 24 GiB"]
    assert all(c.isChecked() for c in devices.checks) and devices.chosen() == (0, 1)
    assert devices.sharding_box.isEnabled() and devices.sharding_box.currentText() == "ddp"
    assert "fsdp" in devices.sharding_box.toolTip() and "replica" in devices.sharding_box.toolTip()
    f = two.fields()
    assert (f["num_processes"], f["sharding"]) == (2, "ddp")
    assert json.loads(two.views.config_preview.toPlainText())["num_processes"] == 2


def test_unchecking_a_gpu_means_one_process_and_no_sharding(two, sources):
    fill(two, *sources)
    devices = two.form.devices
    devices.checks[0].setChecked(False)
    assert devices.chosen() == (1,) and two.fields()["num_processes"] == 1
    assert not devices.sharding_box.isEnabled()
    assert json.loads(two.views.config_preview.toPlainText())["num_processes"] == 1
    assert two.panel.start_button.isEnabled()
    devices.checks[1].setChecked(False)
    assert two.form.shown_error() == "Choose at least one GPU" and not devices.error_label.isHidden()
    assert not two.panel.start_button.isEnabled() and two.start() is False
    devices.checks[0].setChecked(True)
    assert devices.error_label.isHidden() and two.panel.start_button.isEnabled()


def test_start_writes_processes_and_sharding_and_picks_the_gpus(two, sources, monkeypatch):
    fill(two, *sources)
    two.form.devices.sharding_box.setCurrentText("fsdp")
    started: list[tuple[Path, dict]] = []
    monkeypatch.setattr(two.process, "start", lambda path, env=None: started.append((Path(path), dict(env or {}))))
    monkeypatch.setattr(TrainPage, "_launch", lambda self, run_dir, how: how())
    assert two.start()
    path, env = started[0]
    config = json.loads(path.read_text())
    assert (config["num_processes"], config["sharding"]) == (2, "fsdp")
    TrainConfig.from_dict(config)  # the trainer takes it as is
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert two.model.devices == (0, 1)
    assert "CUDA_VISIBLE_DEVICES=0,1 " in two.views.log_view.toPlainText()
    qenv = trainer_environment(env)  # what the QProcess gets
    assert qenv.value("CUDA_VISIBLE_DEVICES") == "0,1" and qenv.value("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
    assert qenv.value("PYTHONUNBUFFERED") == "1"

    two.new_output_dir()
    two.form.devices.checks[0].setChecked(False)
    assert two.start()
    path, env = started[1]
    assert json.loads(path.read_text())["num_processes"] == 1 and env["CUDA_VISIBLE_DEVICES"] == "1"


def test_no_gpu_trains_on_the_cpu_without_touching_cuda_visible_devices(make_page, sources, monkeypatch):
    page = make_page([])
    devices = page.form.devices
    assert devices.checks == [] and not devices.note.isHidden() and "No GPU" in devices.note.text()
    assert not devices.sharding_box.isEnabled()
    fill(page, *sources)
    assert page.fields()["num_processes"] == 1 and page.panel.start_button.isEnabled()
    started: list[dict] = []
    monkeypatch.setattr(page.process, "start", lambda path, env=None: started.append(dict(env or {})))
    monkeypatch.setattr(TrainPage, "_launch", lambda self, run_dir, how: how())
    assert page.start() and started == [{}]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not trainer_environment(started[0]).contains("CUDA_VISIBLE_DEVICES")


def test_a_plan_for_more_gpus_checks_all_and_says_so(two, sources):
    fill(two, *sources)
    two.form.devices.checks[1].setChecked(False)
    two.state.plan_to_train.emit({"method": "lora", "num_processes": 4, "sharding": "fsdp"})
    devices = two.form.devices
    assert devices.chosen() == (0, 1) and devices.sharding() == "fsdp" and devices.sharding_box.isEnabled()
    assert "asks for 4 GPUs; this machine has 2: both are checked" in two.panel.status_label.text()
    two.state.plan_to_train.emit({"method": "lora", "num_processes": 1, "sharding": "ddp"})
    assert devices.chosen() == (0,) and not devices.sharding_box.isEnabled()
    assert "asks for" not in two.panel.status_label.text()  # the earlier note is gone
    assert two.fields()["num_processes"] == 1


def test_gpu_choice_rules():
    assert launch_env((), ()) == {} and launch_env((0, 1), ()) == {}
    assert launch_env((0, 1, 2), (0, 2))["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert mismatch_note(2, (0, 1)) is None and mismatch_note(1, ()) is None
    assert "has none" in mismatch_note(2, ()) and "it is checked" in mismatch_note(2, (0,))
    assert "all 3 are checked" in mismatch_note(8, (0, 1, 2))
    # a resumed run keeps its process count: the checked GPUs if they match, else its first ones
    assert resume_gpus((0, 1, 2), (1, 2), 2) == (1, 2)
    assert resume_gpus((0, 1, 2), (1,), 2) == (0, 1)
    assert resume_gpus((0,), (0,), 2) == ()


def _two_rank_run(alloc: float) -> list[str]:
    start = dict(model="m", method="lora", params_total=100, params_trainable=10, max_steps=3, run_dir="/r",
                 predicted_peak_bytes=4 * GiB)
    lines = [encode("start", 0.1, **start)]
    for n in (1, 2, 3):
        per_rank = {"peak_alloc_bytes_rank0": alloc * GiB, "peak_alloc_bytes_rank1": alloc * GiB / 2,
                    "peak_reserved_bytes_rank0": alloc * GiB, "peak_reserved_bytes_rank1": alloc * GiB / 2,
                    "rss_bytes_rank0": GiB, "rss_bytes_rank1": 2 * GiB}
        lines.append(encode("step", float(n), step=n, epoch=0.1, loss=2.0, lr=1e-4, grad_norm=1.0,
                            tokens_per_s=50.0, peak_alloc_bytes=alloc * GiB, peak_reserved_bytes=alloc * GiB,
                            rss_bytes=2 * GiB, **per_rank))
    return lines


def legend_labels(charts: TrainCharts) -> list[str]:
    return [label.text for _, label in charts.legends[-1].items]


def test_memory_chart_draws_one_curve_per_rank(qtbot):
    charts = TrainCharts()
    qtbot.addWidget(charts)
    model = replay(_two_rank_run(3.0))
    model.devices = (0, 1)
    charts.show_model(model)
    assert len(charts.rank_curves) == 2
    assert list(charts.rank_curves[0].yData) == [3.0] * 3 and list(charts.rank_curves[1].yData) == [1.5] * 3
    assert len(charts.peak_alloc.yData or []) == 0  # the run-wide max is the GPU 0 curve here
    assert charts.predicted.value() == pytest.approx(4.0)
    labels = legend_labels(charts)
    assert "GPU 0 allocated" in labels and "GPU 1 allocated" in labels and "peak allocated (torch)" not in labels
    first = charts.rank_curves[0]
    charts.show_model(replay(_two_rank_run(2.0)))  # curves are reused, not made again
    assert charts.rank_curves[0] is first and list(first.yData) == [2.0] * 3

    # CPU ranks: each process's RSS, one curve each
    cpu = replay(_two_rank_run(0.0))
    charts.show_model(cpu)
    assert [list(c.yData) for c in charts.rank_curves] == [[1.0] * 3, [2.0] * 3]
    assert "rank 0 RSS" in legend_labels(charts) and "GPU 0 allocated" not in legend_labels(charts)
    assert len(charts.rss.yData or []) == 0

    # back to one process: today's single curves, the rank curves empty and out of the legend
    one = replay(_two_rank_run(3.0)[:1] + [encode("step", 1.0, step=1, epoch=0.1, loss=2.0, lr=1e-4, grad_norm=1.0,
                                                  tokens_per_s=5.0, peak_alloc_bytes=3 * GiB,
                                                  peak_reserved_bytes=3 * GiB, rss_bytes=GiB)])
    charts.show_model(one)
    assert all(len(c.yData or []) == 0 for c in charts.rank_curves)
    assert list(charts.peak_alloc.yData) == [3.0] and not any(t.startswith("rank ") for t in legend_labels(charts))
