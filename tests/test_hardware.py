"""planner.hardware: the NVML boundary, driven by a fake ``pynvml`` (no GPU needed).

Whatever NVML does, ``inventory()`` returns an Inventory and never raises.
"""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest

import planner.hardware as hw

GiB = 1024**3


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: str() is NVML's message."""


def make_pynvml(gpus=(), init_error=None, fail=None, calls=None):
    """A fake pynvml module. ``gpus``: dicts with name, uuid, total, used, free.

    ``fail`` names a query function that raises; ``calls`` (a list) records init/shutdown calls.
    """
    calls = [] if calls is None else calls
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError

    def nvmlInit():
        calls.append("init")
        if init_error is not None:
            raise init_error

    def nvmlShutdown():
        calls.append("shutdown")

    def nvmlDeviceGetCount():
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i):
        return ("handle", i)

    def nvmlDeviceGetName(handle):
        return gpus[handle[1]]["name"]

    def nvmlDeviceGetUUID(handle):
        uuid = gpus[handle[1]]["uuid"]
        if isinstance(uuid, Exception):
            raise uuid
        return uuid

    def nvmlDeviceGetMemoryInfo(handle):
        g = gpus[handle[1]]
        return SimpleNamespace(total=g["total"], used=g["used"], free=g["free"])

    for fn in (nvmlInit, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetName,
               nvmlDeviceGetUUID, nvmlDeviceGetMemoryInfo):
        setattr(mod, fn.__name__, fn)
    if fail is not None:
        def broken(*args):
            raise FakeNVMLError("GPU is lost")
        setattr(mod, fail, broken)
    return mod


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch):
    """Every test starts with NVML not initialised and keeps its shutdown hook out of atexit."""
    monkeypatch.setattr(hw, "_nvml", None)
    registered = []
    monkeypatch.setattr(hw.atexit, "register", registered.append)
    return registered


def install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_no_gpu(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=()))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "NVML found no NVIDIA GPU"
    data = json.loads(json.dumps(inv.to_json()))
    assert data["gpus"] == [] and data["reason"] == "NVML found no NVIDIA GPU"


TWO_GPUS = (
    dict(name=b"NVIDIA A100-SXM4-80GB", uuid=b"GPU-aaaa", total=80 * GiB, used=1 * GiB, free=79 * GiB),
    dict(name="NVIDIA GeForce RTX 4090", uuid="GPU-bbbb", total=24 * GiB, used=3 * GiB, free=21 * GiB),
)


def test_two_gpus(monkeypatch, fresh_nvml):
    calls = []
    install(monkeypatch, make_pynvml(gpus=TWO_GPUS, calls=calls))
    inv = hw.inventory()
    assert inv.reason is None
    assert [g.index for g in inv.gpus] == [0, 1]
    assert [g.name for g in inv.gpus] == ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]
    assert [g.uuid for g in inv.gpus] == ["GPU-aaaa", "GPU-bbbb"]
    assert [(g.memory_total, g.memory_used, g.memory_free) for g in inv.gpus] == [
        (80 * GiB, 1 * GiB, 79 * GiB), (24 * GiB, 3 * GiB, 21 * GiB)]
    assert all(type(g.memory_total) is int for g in inv.gpus)
    data = json.loads(json.dumps(inv.to_json()))
    assert data["gpus"][0] == {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-aaaa",
                               "memory_total": 80 * GiB, "memory_used": 1 * GiB, "memory_free": 79 * GiB}
    # lazy init happens once, and the shutdown hook is registered once
    hw.inventory()
    assert calls.count("init") == 1
    assert len(fresh_nvml) == 1


def test_uuid_refused(monkeypatch):
    gpus = (dict(TWO_GPUS[0], uuid=FakeNVMLError("Not Supported")),)
    install(monkeypatch, make_pynvml(gpus=gpus))
    inv = hw.inventory()
    assert inv.reason is None
    assert inv.gpus[0].uuid is None
    assert inv.gpus[0].name == "NVIDIA A100-SXM4-80GB"


@pytest.mark.parametrize("message, reason", [
    ("NVML Shared Library Not Found", "NVML library not found: no NVIDIA driver"),
    ("libnvidia-ml.so.1: cannot open shared object file", "NVML library not found: no NVIDIA driver"),
    ("Driver/library version mismatch", "driver/library version mismatch: reboot or reinstall the NVIDIA driver"),
    ("RM has detected an NVML/RM version mismatch.",
     "driver/library version mismatch: reboot or reinstall the NVIDIA driver"),
    ("Insufficient Permissions", "insufficient permissions to query the GPU"),
    ("Driver Not Loaded", "NVML unavailable: Driver Not Loaded"),
])
def test_init_errors(monkeypatch, message, reason):
    calls = []
    install(monkeypatch, make_pynvml(gpus=TWO_GPUS, init_error=FakeNVMLError(message), calls=calls))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == reason
    assert hw._nvml is None  # a failed init is retried next time, not cached
    hw.inventory()
    assert calls.count("init") == 2


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
    install(monkeypatch, make_pynvml(init_error=error))
    inv = hw.inventory()
    assert inv.gpus == () and inv.reason
    expected = {"NVMLError_LibraryNotFound": "NVML library not found",
                "NVMLError_NoPermission": "insufficient permissions",
                "NVMLError_LibRmVersionMismatch": "version mismatch",
                "NVMLError_DriverNotLoaded": "Driver Not Loaded"}[name]
    assert expected in inv.reason


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "nvidia-ml-py is not installed (pip install nvidia-ml-py)"


@pytest.mark.parametrize("fail", ["nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetName",
                                  "nvmlDeviceGetMemoryInfo"])
def test_query_errors_become_reasons(monkeypatch, fail):
    install(monkeypatch, make_pynvml(gpus=TWO_GPUS, fail=fail))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert inv.reason == "NVML unavailable: GPU is lost"


@pytest.mark.parametrize("error", [RuntimeError("boom"), OSError("Function Not Found"), AttributeError("x"),
                                   ValueError()])
def test_no_exception_escapes(monkeypatch, error):
    install(monkeypatch, make_pynvml(init_error=error))
    inv = hw.inventory()
    assert inv.gpus == ()
    assert isinstance(inv.reason, str) and inv.reason


def test_module_without_functions(monkeypatch):
    """An unrelated module named pynvml (e.g. an old, broken install) is a reason, not a crash."""
    install(monkeypatch, types.ModuleType("pynvml"))
    inv = hw.inventory()
    assert inv.gpus == () and inv.reason


def test_host_memory(monkeypatch):
    install(monkeypatch, make_pynvml())
    pytest.importorskip("psutil")
    inv = hw.inventory()
    assert inv.host is not None
    assert 0 < inv.host.available <= inv.host.total
    assert inv.to_json()["host"] == {"total": inv.host.total, "available": inv.host.available}


def test_host_memory_without_psutil(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=TWO_GPUS))
    monkeypatch.setitem(sys.modules, "psutil", None)
    inv = hw.inventory()
    assert inv.host is None
    assert len(inv.gpus) == 2
    assert json.loads(json.dumps(inv.to_json()))["host"] is None


def test_cli_gpus_with_fake_nvml(monkeypatch, capsys):
    from planner.cli import main

    install(monkeypatch, make_pynvml(gpus=TWO_GPUS))
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]
    assert data["reason"] is None
    monkeypatch.setattr(hw, "_nvml", None)
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA GeForce RTX 4090" in out and "80.0 GiB" in out
