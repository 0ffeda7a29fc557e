"""planner.hardware and planner.nvml: the NVML boundary, driven by a fake ``pynvml`` (no GPU needed).

Whatever NVML does, ``inventory()`` and ``sample()`` return an Inventory and never raise.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import types
from types import SimpleNamespace

import pytest

import planner.hardware as hw
import planner.nvml as nvml

from fake_nvml import (  # noqa: E402
    fresh_nvml,
    install,
    A100,
    FakeNVMLError,
    FunctionNotFound,
    GONE_PID,
    GiB,
    GpuIsLost,
    MiB,
    NVMLLibraryMismatchError,
    NoPermission,
    NotSupported,
    RTX4090,
    _error_class,
    gpu,
    make_pynvml,
    proc,
)


# --- GPUs: 0, 1, 4 -------------------------------------------------------------------------------

def test_no_gpu(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=()))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "NVML found no NVIDIA GPU"
    assert (inv.driver_version, inv.cuda_driver_version) == ("550.54.15", "12.4")
    data = json.loads(json.dumps(inv.to_json()))
    assert data["gpus"] == [] and data["reason"] == "NVML found no NVIDIA GPU"
    s = hw.sample()
    assert s.gpus == () and s.reason == inv.reason


def test_one_gpu_every_field(monkeypatch):
    me = os.getpid()
    g = gpu(compute=[proc(me, 5 * GiB), proc(GONE_PID, 512 * MiB)], graphics=[proc(me, 5 * GiB)])
    install(monkeypatch, make_pynvml(gpus=[g], process_names={GONE_PID: b"/usr/bin/python3.11"}))
    inv = hw.inventory()
    assert inv.reason is None and inv.notes == ()
    (a,) = inv.gpus
    assert (a.index, a.name, a.uuid) == (0, "NVIDIA A100-SXM4-80GB", "GPU-aaaa")
    assert (a.memory_total, a.memory_used, a.memory_free) == (80 * GiB, 1 * GiB, 79 * GiB)
    assert (a.utilization_gpu, a.utilization_memory, a.temperature_c) == (37, 12, 45)
    assert (a.power_w, a.power_limit_w) == (250.5, 400.0)  # milliwatts -> watts
    assert a.compute_capability == (8, 0) and a.mig_enabled is False
    import psutil

    assert a.processes == (
        hw.GpuProcess(me, psutil.Process(me).name(), 5 * GiB, "C+G"),  # one process in both lists
        hw.GpuProcess(GONE_PID, "python3.11", 512 * MiB, "C"),  # not visible to psutil: NVML's name
    )
    assert a.process_memory_available is True


def test_four_gpus(monkeypatch):
    gpus = [gpu(A100, uuid=f"GPU-{i}", used=i * GiB) for i in range(2)] + [gpu(RTX4090, uuid=f"GPU-{i}") for i in (2, 3)]
    install(monkeypatch, make_pynvml(gpus=gpus))
    inv = hw.inventory()
    assert [g.index for g in inv.gpus] == [0, 1, 2, 3]
    assert [g.uuid for g in inv.gpus] == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]
    assert [g.name for g in inv.gpus] == ["NVIDIA A100-SXM4-80GB"] * 2 + ["NVIDIA GeForce RTX 4090"] * 2
    assert [g.memory_used for g in inv.gpus] == [0, GiB, 3 * GiB, 3 * GiB]
    assert [g.compute_capability for g in inv.gpus] == [(8, 0), (8, 0), (8, 9), (8, 9)]
    assert all(type(g.memory_total) is int for g in inv.gpus)
    again = hw.sample()  # host figures (CPU load, free RAM) move between calls; the GPUs do not here
    assert (again.gpus, again.reason) == (inv.gpus, inv.reason)


def test_sample_sees_dynamic_changes_but_not_static_ones(monkeypatch):
    g = gpu()
    install(monkeypatch, make_pynvml(gpus=[g]))
    hw.inventory()
    g.update(used=70 * GiB, free=10 * GiB, temp=80, power=399_000, util=(100, 90), name="renamed", compute=[proc(7, GiB)])
    s = hw.sample().gpus[0]
    assert (s.memory_used, s.temperature_c, s.power_w, s.utilization_gpu) == (70 * GiB, 80, 399.0, 100)
    assert [p.pid for p in s.processes] == [7]
    assert s.name == "NVIDIA A100-SXM4-80GB"  # static: read once per enumeration
    assert hw.inventory().gpus[0].name == "renamed"  # a full inventory re-reads it


# --- MIG -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mig, expected", [
    ([1, 1], True),
    ([0, 0], False),
    ([0, 1], False),  # enabling is pending a GPU reset: currently off
    ([1, 0], True),
    (NotSupported(), None),  # GPUs without MIG
    (NoPermission(), None),
])
def test_mig_mode(monkeypatch, mig, expected):
    install(monkeypatch, make_pynvml(gpus=[gpu(mig=mig)]))
    inv = hw.inventory()
    assert inv.gpus[0].mig_enabled is expected
    assert inv.to_json()["gpus"][0]["mig_enabled"] is expected


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


# --- JSON ------------------------------------------------------------------------------------------

def test_json_shape(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(compute=[proc(GONE_PID, GiB)]), RTX4090]))
    data = json.loads(json.dumps(hw.inventory().to_json()))
    assert set(data) == {"gpus", "host", "reason", "driver_version", "cuda_driver_version", "notes"}
    assert isinstance(data["gpus"], list) and data["reason"] is None and data["notes"] == []
    assert data["gpus"][0] == {
        "index": 0, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-aaaa",
        "memory_total": 80 * GiB, "memory_used": 1 * GiB, "memory_free": 79 * GiB,
        "utilization_gpu": 37, "utilization_memory": 12, "temperature_c": 45,
        "power_w": 250.5, "power_limit_w": 400.0, "compute_capability": [8, 0], "mig_enabled": False,
        "processes": [{"pid": GONE_PID, "name": None, "used_memory": GiB, "kind": "C"}],
        "process_memory_available": True,
    }
    assert set(data["host"]) == {"cpu_count", "cpu_model", "cpu_percent", "load_average", "ram_total",
                                 "ram_available"}
    assert (data["driver_version"], data["cuda_driver_version"]) == ("550.54.15", "12.4")


# --- speed -----------------------------------------------------------------------------------------

def test_sample_cost_per_gpu(monkeypatch):
    """A 1 Hz GUI timer calls sample(): it must not re-initialise NVML or re-read static facts."""
    calls = collections.Counter()
    n = 8
    gpus = [gpu(uuid=f"GPU-{i}", compute=[proc(GONE_PID + i, GiB)], graphics=[proc(1, 0)]) for i in range(n)]
    install(monkeypatch, make_pynvml(gpus=gpus, calls=calls))
    hw.inventory()
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        inv = hw.sample()
    per_gpu = (time.perf_counter() - start) / rounds / n
    print(f"sample(): {per_gpu * 1e6:.1f} us per GPU with the fake pynvml")
    assert len(inv.gpus) == n
    assert calls["nvmlInit"] == 1
    for static in ("nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID",
                   "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetMigMode", "nvmlSystemGetDriverVersion"):
        assert calls[static] <= n, static  # once, at the enumeration
    assert calls["nvmlDeviceGetTemperature"] == n * (rounds + 1)
    assert per_gpu < 1e-3  # budget 5 ms per GPU with real NVML; the fake takes microseconds


# --- host ------------------------------------------------------------------------------------------

def test_host(monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setattr(hw, "_cpu_primed", False)
    install(monkeypatch, make_pynvml())
    h = hw.inventory().host
    assert 0 < h.ram_available <= h.ram_total
    assert h.cpu_count == os.cpu_count()
    assert h.cpu_percent is None  # the first reading has no interval behind it
    assert 0.0 <= hw.sample().host.cpu_percent <= 100.0
    if hasattr(os, "getloadavg"):
        assert h.load_average >= 0


def test_host_without_psutil(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[A100]))
    monkeypatch.setitem(sys.modules, "psutil", None)
    inv = hw.inventory()
    assert (inv.host.ram_total, inv.host.ram_available, inv.host.cpu_percent) == (None, None, None)
    assert inv.host.cpu_count == os.cpu_count()
    assert len(inv.gpus) == 1
    assert json.loads(json.dumps(inv.to_json()))["host"]["ram_total"] is None


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_gpus_json(monkeypatch, capsys):
    from planner.cli import main

    install(monkeypatch, make_pynvml(gpus=[A100, RTX4090]))
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]
    assert data["reason"] is None and data["host"]["cpu_count"]


def test_cli_gpus_table(monkeypatch, capsys):
    from planner.cli import main

    gpus = [gpu(compute=[proc(GONE_PID, 5 * GiB)], graphics=[proc(GONE_PID + 1, None)]),
            gpu(RTX4090, temp=NotSupported(), compute=NoPermission(), graphics=NoPermission())]
    install(monkeypatch, make_pynvml(gpus=gpus, process_names={GONE_PID: "python"}))
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert lines[0] == "NVIDIA driver 550.54.15 · CUDA 12.4"
    header, a100, rtx = lines[1:4]
    assert header.split() == ["#", "name", "memory", "used", "/", "total", "util", "temp", "power", "/", "limit",
                              "CC", "MIG"]
    assert "NVIDIA A100-SXM4-80GB" in a100 and "1.0 / 80.0 GiB" in a100 and "37 %" in a100
    assert "45 C" in a100 and "250 / 400 W" in a100 and a100.split()[-2:] == ["8.0", "off"]
    assert rtx.split()[-7:] == ["n/a", "420", "/", "450", "W", "8.9", "n/a"]  # no temperature, no MIG
    # the columns line up
    assert len({line.index("GiB") for line in (a100, rtx)}) == 1
    assert len({line.index(" W") for line in (a100, rtx)}) == 1
    assert "GPU 0 processes:" in out and "GPU 1 processes: n/a" in out
    proc_lines = [line for line in lines if line.split()[:1] in ([str(GONE_PID)], [str(GONE_PID + 1)])]
    assert "python" in proc_lines[0] and "5.00 GiB" in proc_lines[0]
    assert proc_lines[1].split()[1:] == ["n/a", "n/a", "G"]
    assert any(line.startswith("host RAM: ") for line in lines)
    assert any(line.startswith("host CPU: ") for line in lines)
    assert "note: GPU 1: process list unavailable: Insufficient Permissions" in lines


def test_cli_gpus_without_gpu(monkeypatch, capsys):
    from planner.cli import main

    install(monkeypatch, make_pynvml(init_error=FakeNVMLError("NVML Shared Library Not Found")))
    assert main(["gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "no NVIDIA GPU: NVML library not found: no NVIDIA driver"
    assert lines[1].startswith("host RAM: ") and lines[2].startswith("host CPU: ")
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpus"] == [] and data["reason"] == "NVML library not found: no NVIDIA driver"
