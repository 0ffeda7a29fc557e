"""The Hardware page driven through real widgets, with a fake ``pynvml`` (no GPU or driver needed)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QObject, QSettings, Qt, Signal  # noqa: E402

import planner.nvml as nvml  # noqa: E402
from planner.catalog.gpus import find_gpu  # noqa: E402
from planner.gui.hardware.model import History, catalog_target, nearest_spec  # noqa: E402
from planner.gui.hardware.page import HardwarePage  # noqa: E402
from planner.gui.state import AppState  # noqa: E402
from planner.targets import GpuTarget  # noqa: E402

GiB = 1024**3
GONE_PID = 2**22 + 12345  # above Linux's largest pid_max: psutil can't see it, NVML names it


# --- a minimal fake pynvml (the full one, with every failure mode, is in tests/test_hardware.py) ---

class FakeNVMLError(Exception):
    pass


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def a100(**changes: object) -> dict:
    return dict(dict(name="NVIDIA A100-SXM4-80GB", uuid="GPU-a", total=80 * GiB, used=1 * GiB, util=(37, 12),
                     temp=45, power=250_500, limit=400_000, cc=(8, 0), mig=[0, 0], compute=[], graphics=[]),
                **changes)


def rtx4090(**changes: object) -> dict:
    return dict(dict(name="NVIDIA GeForce RTX 4090", uuid="GPU-b", total=24 * GiB, used=3 * GiB, util=(99, 80),
                     temp=71, power=420_000, limit=450_000, cc=(8, 9), mig=None, compute=[], graphics=[]),
                **changes)


def make_pynvml(gpus: list[dict], init_error: Exception | None = None) -> types.ModuleType:
    """Each GPU is a dict the test may change between samples (``used`` ...)."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.NVML_DEVICE_MIG_ENABLE = 1

    def init() -> None:
        if init_error is not None:
            raise init_error

    def g(handle: tuple[str, int]) -> dict:
        return gpus[handle[1]]

    def mig(handle: tuple[str, int]) -> list[int]:
        if g(handle)["mig"] is None:
            raise FakeNVMLError("Not Supported")
        return g(handle)["mig"]

    functions = dict(
        nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetName=lambda h: g(h)["name"], nvmlDeviceGetUUID=lambda h: g(h)["uuid"],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=g(h)["total"], used=g(h)["used"],
                                                          free=g(h)["total"] - g(h)["used"]),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=g(h)["util"][0], memory=g(h)["util"][1]),
        nvmlDeviceGetTemperature=lambda h, sensor: g(h)["temp"],
        nvmlDeviceGetPowerUsage=lambda h: g(h)["power"], nvmlDeviceGetEnforcedPowerLimit=lambda h: g(h)["limit"],
        nvmlDeviceGetCudaComputeCapability=lambda h: g(h)["cc"], nvmlDeviceGetMigMode=mig,
        nvmlDeviceGetComputeRunningProcesses=lambda h: list(g(h)["compute"]),
        nvmlDeviceGetGraphicsRunningProcesses=lambda h: list(g(h)["graphics"]),
        nvmlSystemGetDriverVersion=lambda: "550.54.15", nvmlSystemGetCudaDriverVersion_v2=lambda: 12040,
        nvmlSystemGetProcessName=lambda pid: "/usr/bin/python3",
    )
    for name, fn in functions.items():
        setattr(mod, name, fn)
    return mod


# --- the PySide6 pin ------------------------------------------------------------------------------

class _Probe(QObject):
    ping = Signal()


def test_pyside_keeps_references():
    """PySide6 6.12.0 dropped a reference to True on every Signal.emit() (and to None on every void
    call): before Python 3.12 the app aborted within minutes of live charts. pyproject pins
    PySide6-Essentials below 6.12; this fails if an install brings the bug back."""
    probe, before = _Probe(), sys.getrefcount(True)
    for _ in range(10):
        probe.ping.emit()
    assert before - sys.getrefcount(True) < 10


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML not started, and no shutdown hook left in atexit (as tests/test_hardware.py does)."""
    monkeypatch.setattr(nvml, "_session", None)
    monkeypatch.setattr(nvml, "_failure", None)
    monkeypatch.setattr(nvml, "_atexit_registered", False)
    monkeypatch.setattr(nvml.atexit, "register", lambda fn: None)


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch):
    def _install(gpus: list[dict], init_error: Exception | None = None) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", make_pynvml(gpus, init_error))
    return _install


@pytest.fixture
def settings_file(tmp_path) -> str:
    return str(tmp_path / "planner.ini")


def new_state(path: str) -> AppState:
    return AppState(QSettings(path, QSettings.Format.IniFormat))


@pytest.fixture
def make_page(qtbot, settings_file):
    def _make(show: bool = True, path: str | None = None) -> HardwarePage:
        page = HardwarePage(new_state(path or settings_file))
        qtbot.addWidget(page)
        page.timer.stop()  # the tests call the sampling slot themselves
        page.resize(1200, 800)
        if show:
            page.show()
        return page
    return _make


def curve_lengths(page: HardwarePage) -> list[int]:
    return [len(c.getData()[0]) for c in page.chart.curves]


# --- no GPU ------------------------------------------------------------------------------------

def test_no_gpu_banner_and_catalog_default(install, make_page):
    install([], init_error=FakeNVMLError("NVML Shared Library Not Found"))
    page = make_page()
    assert page.banner.isVisible()
    assert "No NVIDIA GPU: NVML library not found: no NVIDIA driver" in page.banner_label.text()
    assert page.cards == [] and page.host_card is not None
    assert len(page.chart.curves) == 1  # host RAM only
    gpu = page.state.gpu
    # the driver-reported 24,564 MiB, not "24 GB" read as GiB
    assert (gpu.name, gpu.memory_bytes, gpu.count, gpu.source) == ("RTX 4090", 24564 * 2**20, 1, "catalog")
    assert gpu.spec.name == "RTX 4090"
    assert page.state.settings.value("plan/gpu") is None  # a default is not a choice: not stored


def test_no_gpu_search_a_catalog_gpu(install, make_page, settings_file, qtbot):
    install([], init_error=FakeNVMLError("NVML Shared Library Not Found"))
    page = make_page()
    edit = page.picker.combo.lineEdit()
    edit.selectAll()
    qtbot.keyClicks(edit, "a100 80gb pcie")
    edit.editingFinished.emit()  # what Enter or leaving the field sends
    gpu = page.state.gpu
    assert (gpu.name, gpu.memory_bytes, gpu.source) == ("A100 80GB PCIe", 80 * GiB, "catalog")
    assert gpu.spec == find_gpu("A100 80GB PCIe")
    assert page.picker.combo.currentText() == "A100 80GB PCIe · 80 GB datasheet, 80 GiB usable"
    assert QSettings(settings_file, QSettings.Format.IniFormat).value("plan/gpu") == "A100 80GB PCIe"
    again = make_page()  # the next start restores it
    assert again.state.gpu.name == "A100 80GB PCIe" and again.state.gpu.source == "catalog"


def test_no_gpu_unknown_text_is_undone(install, make_page, qtbot):
    install([], init_error=FakeNVMLError("NVML Shared Library Not Found"))
    page = make_page()
    edit = page.picker.combo.lineEdit()
    edit.selectAll()
    qtbot.keyClicks(edit, "no such gpu")
    edit.editingFinished.emit()
    assert page.state.gpu.name == "RTX 4090"
    assert page.picker.combo.currentText() == "RTX 4090 · 24 GB datasheet, 23.99 GiB usable"


def test_no_gpu_custom_memory_and_count(install, make_page, settings_file):
    install([], init_error=FakeNVMLError("NVML Shared Library Not Found"))
    page = make_page()
    picker = page.picker
    assert picker.custom_spin.isHidden()
    picker.combo.setCurrentIndex(picker.combo.findText("Custom memory…"))
    assert picker.custom_spin.isVisible()
    picker.custom_spin.setValue(20.0)
    gpu = page.state.gpu
    assert (gpu.name, gpu.memory_bytes, gpu.count, gpu.source) == ("custom 20 GiB GPU", 20 * GiB, 1, "custom")
    assert gpu.spec == nearest_spec(20 * GiB)
    assert "nearest in memory" in picker.detail_label.text()
    picker.count_spin.setValue(2)
    assert page.state.gpu.count == 2 and page.state.gpu.memory_bytes == 20 * GiB
    stored = QSettings(settings_file, QSettings.Format.IniFormat)
    assert stored.value("plan/gpu") == "custom:20" and int(stored.value("plan/gpu_count")) == 2
    again = make_page()
    assert again.state.gpu == GpuTarget("custom 20 GiB GPU", 20 * GiB, 2, "custom", nearest_spec(20 * GiB))
    assert again.picker.custom_spin.value() == 20.0


def test_another_page_setting_the_gpu_is_shown(install, make_page):
    install([], init_error=FakeNVMLError("NVML Shared Library Not Found"))
    page = make_page()
    target = catalog_target("H100 SXM", count=4)
    page.state.set_gpu(target)
    assert page.state.gpu == target  # not overwritten by the picker
    assert page.picker.combo.currentText().startswith("H100 SXM ")
    assert page.picker.count_spin.value() == 4


# --- two GPUs ----------------------------------------------------------------------------------

@pytest.fixture
def two_gpus(install):
    gpus = [a100(compute=[proc(GONE_PID, 5 * GiB)], graphics=[proc(GONE_PID + 1, 512 * 1024**2)]),
            rtx4090(compute=[proc(GONE_PID + 2, None)])]  # WDDM: processes without their memory
    install(gpus)
    return gpus


def test_two_gpus_cards(two_gpus, make_page):
    page = make_page()
    assert not page.banner.isVisible()
    assert [c.title() for c in page.cards] == ["GPU 0: NVIDIA A100-SXM4-80GB", "GPU 1: NVIDIA GeForce RTX 4090"]
    a, b = page.cards
    assert a.catalog_label.text() == "Catalog: A100 80GB SXM\nCompute capability 8.0 · MIG off"
    assert b.catalog_label.text() == "Catalog: RTX 4090\nCompute capability 8.9"
    assert a.memory_bar.format() == "1.00 / 80.00 GiB used (1%)"
    assert b.memory_bar.format() == "3.00 / 24.00 GiB used (12%)"
    assert (a.util_label.text(), a.temp_label.text(), a.power_label.text()) == ("37 %", "45 °C", "250 / 400 W")
    assert a.process_rows() == [(str(GONE_PID), "python3", "5.00 GiB", "C"),
                                (str(GONE_PID + 1), "python3", "0.50 GiB", "G")]
    assert b.process_rows() == [(str(GONE_PID + 2), "python3", "n/a", "C")]
    assert "per-process memory" in page.notes_label.text()
    assert page.driver_label.text() == "NVIDIA driver 550.54.15 · CUDA 12.4"
    assert len(page.chart.curves) == 3  # two GPUs and host RAM
    gpu = page.state.gpu
    assert gpu == GpuTarget("NVIDIA A100-SXM4-80GB", 80 * GiB, 1, "nvml", find_gpu("A100 80GB SXM"))
    assert page.picker.count_spin.maximum() == 1  # the other GPU is another kind: no 2-GPU plan


def test_choose_second_gpu_then_rescan_keeps_it(two_gpus, make_page):
    page = make_page()
    picker = page.picker
    picker.combo.setCurrentIndex(picker.combo.findText("GPU 1:", Qt.MatchFlag.MatchStartsWith))
    assert page.state.gpu.name == "NVIDIA GeForce RTX 4090" and page.state.gpu.source == "nvml"
    assert page.state.gpu.spec.name == "RTX 4090"
    page.rescan()
    assert page.state.gpu.name == "NVIDIA GeForce RTX 4090"
    assert len(page.cards) == 2


def test_identical_gpus_count(install, make_page):
    install([rtx4090(uuid="GPU-0"), rtx4090(uuid="GPU-1")])
    page = make_page()
    assert page.picker.count_spin.maximum() == 2
    page.picker.count_spin.setValue(2)
    assert (page.state.gpu.count, page.state.gpu.source) == (2, "nvml")


@pytest.mark.parametrize("name, total, entry", [
    ("NVIDIA GeForce RTX 4090", 24 * GiB, "RTX 4090"),  # 24,576 MiB: a driver that reports 12 MiB more
    ("NVIDIA A40", 49140 * 2**20, "A40"),  # ECC turned off: 1/16 more than the catalog's ECC-on total
])
def test_detected_gpu_plans_with_nvmls_total_not_the_catalogs(install, make_page, name, total, entry):
    """Issue 13.4: when NVML sees the GPU, its own total wins; the catalog gives speed and price."""
    install([a100(name=name, total=total)])
    page = make_page()
    gpu = page.state.gpu
    assert gpu.source == "nvml" and gpu.spec.name == entry
    assert gpu.memory_bytes == total != find_gpu(entry).memory_bytes
    assert page.cards[0].catalog_label.text().startswith(f"Catalog: {entry}")


def test_unknown_gpu_uses_nearest_catalog_spec(install, make_page):
    install([a100(name="NVIDIA Mystery 20GB", total=20 * GiB)])
    page = make_page()
    assert page.state.gpu.spec == nearest_spec(20 * GiB)
    assert page.cards[0].catalog_label.text().startswith("Not in the catalog: plans use the speed and price of ")


def test_sample_adds_one_point_per_series(two_gpus, make_page):
    page = make_page()
    before = curve_lengths(page)
    two_gpus[0]["used"] = 30 * GiB
    two_gpus[1]["compute"] = []
    page.sample_now()
    assert curve_lengths(page) == [n + 1 for n in before]
    x, y = page.chart.curves[0].getData()
    assert y[-1] == pytest.approx(30.0) and x[-1] == 0.0
    assert page.chart.curves[2].getData()[1][-1] > 0  # host RAM in use
    assert page.cards[0].memory_bar.format() == "30.00 / 80.00 GiB used (38%)"
    assert page.cards[1].process_label.text() == "Processes: none"


def test_timer_samples_every_interval(two_gpus, make_page, qtbot):
    page = make_page()
    assert page.timer.interval() == 1000
    count = page.history.count
    page.timer.start(5)  # the real wiring, faster
    qtbot.waitUntil(lambda: page.history.count >= count + 3, timeout=5000)
    page.timer.stop()


def test_hidden_page_keeps_history_but_does_not_repaint(two_gpus, make_page):
    page = make_page(show=False)
    shown = curve_lengths(page)
    for _ in range(5):
        page.sample_now()
    assert page.history.count == shown[0] + 5
    assert curve_lengths(page) == shown  # nothing drawn while hidden
    page.show()
    assert curve_lengths(page) == [shown[0] + 5] * 3  # caught up on show


def test_ring_is_bounded_and_resizes(two_gpus, make_page):
    page = make_page(show=False)
    page.set_window_minutes(1)
    assert page.history.capacity == 60
    for i in range(150):
        two_gpus[0]["used"] = i * GiB
        page.sample_now()
    assert page.history.count == 60
    page.show()
    assert curve_lengths(page) == [60, 60, 60]
    assert page.chart.curves[0].getData()[1][-1] == pytest.approx(149.0)
    page.set_window_minutes(10)
    assert (page.history.capacity, page.history.count) == (600, 60)  # kept what it had
    page.sample_now()
    assert curve_lengths(page) == [61, 61, 61]
    page.set_window_minutes(1)
    assert curve_lengths(page) == [60, 60, 60]
    assert int(page.state.settings.value("hardware/window_min")) == 1


def test_history_ring_order_and_resize():
    h = History(2, 3)
    for i in range(5):
        h.append(float(i), [i, 10 * i])
    assert h.times().tolist() == [2, 3, 4] and h.values(1).tolist() == [20, 30, 40]
    h.resize(5)
    for i in range(5, 8):
        h.append(float(i), [i, np.nan])
    assert h.times().tolist() == [3, 4, 5, 6, 7] and np.isnan(h.values(1)[-1])
    h.resize(2)
    assert h.values(0).tolist() == [6, 7]
    h.append(8.0, [8, 80])
    assert h.values(0).tolist() == [7, 8] and h.count == 2


# --- cost --------------------------------------------------------------------------------------

def test_sampling_slot_cost_with_four_gpus(install, make_page):
    """The 1 Hz slot runs on the GUI thread: NVML reads, ring write, card texts, 5 setData calls."""
    gpus = [a100(uuid=f"GPU-{i}", compute=[proc(GONE_PID + i, GiB)]) for i in range(4)]
    install(gpus)
    page = make_page()
    page.sample_now()  # warm-up: first-call costs (psutil, numpy paths) are not per-second costs
    medians = []
    for _ in range(3):  # the best of three medians: other processes on a 2-core box only add time
        costs = []
        for i in range(10):
            gpus[i % 4]["used"] = (i + 1) * GiB  # something changes every second, as on a training GPU
            start = time.perf_counter()
            page.sample_now()
            costs.append(time.perf_counter() - start)
        medians.append(statistics.median(costs))
    print(f"sampling slot: {min(medians) * 1e3:.2f} ms (medians {[round(m * 1e3, 2) for m in medians]} ms) "
          "with 4 fake GPUs")
    assert min(medians) < 5e-3
