"""planner.nvml: starting NVML, enumerating GPUs and every query failing on its own, through a fake ``pynvml``."""

from __future__ import annotations

import collections
import sys
import types

import pytest
from fake_nvml import (  # noqa: E402
    A100,
    GONE_PID,
    RTX4090,
    FakeNVMLError,
    GiB,
    GpuIsLost,
    NoPermission,
    NotSupported,
    fresh_nvml,  # noqa: F401 - autouse: every test starts from a fresh NVML boundary
    gpu,
    install,
    make_pynvml,
    proc,
)

import planner.hardware as hw
import planner.nvml as nvml

# --- starting NVML ---------------------------------------------------------------------------------

@pytest.mark.parametrize("message, reason", [
    ("NVML Shared Library Not Found", "NVML library not found: no NVIDIA driver"),
    ("libnvidia-ml.so.1: cannot open shared object file", "NVML library not found: no NVIDIA driver"),
    ("Could not find/load shared library nvml.dll", "NVML library not found: no NVIDIA driver"),
    ("Driver/library version mismatch", "driver/library version mismatch: reboot or reinstall the NVIDIA driver"),
    ("RM has detected an NVML/RM version mismatch.",
     "driver/library version mismatch: reboot or reinstall the NVIDIA driver"),
    ("Insufficient Permissions", "insufficient permissions to query the GPU"),
    ("Driver Not Loaded", "NVML unavailable: Driver Not Loaded"),
])
def test_init_errors(monkeypatch, fresh_nvml, message, reason):
    calls = collections.Counter()
    install(monkeypatch, make_pynvml(gpus=[A100], init_error=FakeNVMLError(message), calls=calls))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == reason
    assert inv.to_json()["gpus"] == [] and inv.to_json()["reason"] == reason
    assert nvml._session is None and fresh_nvml == []  # nothing to shut down
    assert hw.sample().reason == reason
    assert calls["nvmlInit"] == 1  # a sample reuses the failure instead of reloading NVML every second
    hw.inventory()
    assert calls["nvmlInit"] == 2  # a full inventory retries


def test_init_error_without_message(monkeypatch):
    install(monkeypatch, make_pynvml(init_error=FakeNVMLError()))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "NVML unavailable: FakeNVMLError"


@pytest.mark.parametrize("name", ["NVMLError_LibraryNotFound", "NVMLError_NoPermission",
                                  "NVMLError_LibRmVersionMismatch", "NVMLError_DriverNotLoaded"])
def test_real_pynvml_error_types(monkeypatch, name):
    """The reason strings match the messages of the real nvidia-ml-py exceptions."""
    real = pytest.importorskip("pynvml")
    code = {"NVMLError_LibraryNotFound": real.NVML_ERROR_LIBRARY_NOT_FOUND,
            "NVMLError_NoPermission": real.NVML_ERROR_NO_PERMISSION,
            "NVMLError_LibRmVersionMismatch": real.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
            "NVMLError_DriverNotLoaded": real.NVML_ERROR_DRIVER_NOT_LOADED}[name]
    error = real.NVMLError(code)
    assert type(error).__name__ == name
    install(monkeypatch, make_pynvml(init_error=error))
    inv = hw.inventory()
    assert inv.gpus == () and inv.reason
    expected = {"NVMLError_LibraryNotFound": "NVML library not found",
                "NVMLError_NoPermission": "insufficient permissions",
                "NVMLError_LibRmVersionMismatch": "version mismatch",
                "NVMLError_DriverNotLoaded": "Driver Not Loaded"}[name]
    assert expected in inv.reason


def test_real_pynvml_without_driver():
    """The installed nvidia-ml-py on this driverless machine: a reason, not an exception."""
    pytest.importorskip("pynvml")
    inv = hw.inventory()
    if inv.gpus:
        pytest.skip("this machine has an NVIDIA GPU")
    assert inv.reason
    hw.shutdown()


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "nvidia-ml-py is not installed (pip install nvidia-ml-py)"


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError("Function Not Found"), AttributeError("x"),
                                   ValueError()])
def test_no_exception_escapes_init(monkeypatch, error):
    install(monkeypatch, make_pynvml(init_error=error))
    for inv in (hw.inventory(), hw.sample()):
        assert inv.gpus == ()
        assert isinstance(inv.reason, str) and inv.reason


def test_module_without_functions(monkeypatch):
    """An unrelated module named pynvml (e.g. an old, broken install) is a reason, not a crash."""
    install(monkeypatch, types.ModuleType("pynvml"))
    inv = hw.inventory()
    assert inv.gpus == () and inv.reason


def test_init_once_and_atexit_shutdown_registered_once(monkeypatch, fresh_nvml):
    calls = collections.Counter()
    install(monkeypatch, make_pynvml(gpus=[A100, RTX4090], calls=calls))
    for _ in range(3):
        hw.inventory()
        hw.sample()
    assert calls["nvmlInit"] == 1
    assert fresh_nvml == [nvml.shutdown]
    fresh_nvml[0]()  # what the interpreter does at exit
    assert calls["nvmlShutdown"] == 1 and nvml._session is None
    fresh_nvml[0]()  # shutting down twice is harmless
    assert calls["nvmlShutdown"] == 1
    assert len(hw.sample().gpus) == 2  # a later query starts NVML again ...
    hw.shutdown()
    hw.inventory()
    assert calls["nvmlInit"] == 3
    assert fresh_nvml == [nvml.shutdown]  # ... without registering a second hook


def test_shutdown_error_is_swallowed(monkeypatch, fresh_nvml):
    def refuse():
        raise FakeNVMLError("Uninitialized")

    install(monkeypatch, make_pynvml(gpus=[A100], extra={"nvmlShutdown": refuse}))
    hw.inventory()
    fresh_nvml[0]()
    assert nvml._session is None


# --- enumeration errors ----------------------------------------------------------------------------

def test_count_error_is_the_reason(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[A100], fail="nvmlDeviceGetCount"))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "NVML unavailable: GPU is lost"
    assert inv.driver_version == "550.54.15"


def test_unopenable_gpu_is_skipped_with_a_note(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[A100, gpu(RTX4090, handle=GpuIsLost())]))
    inv = hw.inventory()
    assert [g.index for g in inv.gpus] == [0]
    assert inv.reason is None
    assert inv.notes == ("GPU 1 skipped: GPU is lost",)


def test_no_openable_gpu(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(handle=NoPermission())]))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "insufficient permissions to query the GPU"


# --- per-query errors: that field is None ----------------------------------------------------------

@pytest.mark.parametrize("changes, nones", [
    (dict(temp=NotSupported()), ["temperature_c"]),
    (dict(power=NotSupported()), ["power_w"]),
    (dict(power=NotSupported(), limit=NotSupported()), ["power_w", "power_limit_w"]),
    (dict(util=NotSupported()), ["utilization_gpu", "utilization_memory"]),
    (dict(cc=NoPermission()), ["compute_capability"]),
    (dict(uuid=NotSupported()), ["uuid"]),
    (dict(name=GpuIsLost()), ["name"]),
    (dict(memory=GpuIsLost()), ["memory_total", "memory_used", "memory_free"]),
    (dict(compute=NoPermission(), graphics=NoPermission()), ["processes", "process_memory_available"]),
])
def test_query_error_makes_that_field_none(monkeypatch, changes, nones):
    busy = gpu(compute=[proc(GONE_PID, GiB)])
    install(monkeypatch, make_pynvml(gpus=[gpu(busy, **changes), RTX4090]))
    for inv in (hw.inventory(), hw.sample()):
        assert inv.reason is None and len(inv.gpus) == 2
        bad, good = inv.to_json()["gpus"]
        assert [k for k, v in bad.items() if v is None] == nones
        assert good["temperature_c"] == 71 and good["uuid"] == "GPU-bbbb"


def test_processes_refused(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(compute=NoPermission(), graphics=NoPermission())]))
    inv = hw.inventory()
    assert inv.gpus[0].processes is None
    assert inv.notes == ("GPU 0: process list unavailable: Insufficient Permissions",)


def test_graphics_list_not_supported_keeps_compute(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(compute=[proc(GONE_PID, GiB)], graphics=NotSupported())]))
    inv = hw.inventory()
    assert [(p.pid, p.used_memory, p.kind) for p in inv.gpus[0].processes] == [(GONE_PID, GiB, "C")]
    assert inv.notes == ()


def test_enforced_limit_falls_back_to_management_limit(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(limit=NotSupported(), management_limit=300_000)]))
    assert hw.inventory().gpus[0].power_limit_w == 300.0


def test_gpu_lost_after_enumeration(monkeypatch):
    g = gpu(compute=[proc(GONE_PID, GiB)])
    install(monkeypatch, make_pynvml(gpus=[g]))
    hw.inventory()
    for key in ("memory", "util", "temp", "power", "limit", "compute", "graphics"):
        g[key] = GpuIsLost()
    s = hw.sample()
    assert len(s.gpus) == 1 and s.gpus[0].memory_used is None and s.gpus[0].power_w is None
    assert s.gpus[0].memory_total == 80 * GiB  # known from the enumeration
    assert s.gpus[0].processes is None


def test_malformed_answers_are_none(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(cc=None, mig="weird", temp="hot", power=None)], cuda=0))
    inv = hw.inventory()
    g = inv.gpus[0]
    assert (g.compute_capability, g.temperature_c, g.power_w) == (None, None, None)
    assert inv.cuda_driver_version is None


# --- names as bytes or str -------------------------------------------------------------------------

@pytest.mark.parametrize("name, uuid, driver", [
    (b"NVIDIA H100 80GB HBM3", b"GPU-1234", b"550.54.15"),
    ("NVIDIA H100 80GB HBM3", "GPU-1234", "550.54.15"),
])
def test_bytes_and_str(monkeypatch, name, uuid, driver):
    install(monkeypatch, make_pynvml(gpus=[gpu(name=name, uuid=uuid)], driver=driver))
    inv = hw.inventory()
    assert (inv.gpus[0].name, inv.gpus[0].uuid, inv.driver_version) == ("NVIDIA H100 80GB HBM3", "GPU-1234",
                                                                          "550.54.15")


def test_undecodable_name(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(name=b"NVIDIA \xff")]))
    assert hw.inventory().gpus[0].name == "NVIDIA \ufffd"
