"""planner.hardware: the NVML boundary, driven by a fake ``pynvml`` (no GPU needed); planner.nvml's
own failure modes are in test_nvml.py, the gpus command's words in test_hardware_text.py.

Whatever NVML does, ``inventory()`` and ``sample()`` return an Inventory and never raise.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

import pytest
from fake_nvml import (  # noqa: E402
    A100,
    GONE_PID,
    RTX4090,
    GiB,
    MiB,
    NoPermission,
    NotSupported,
    fresh_nvml,  # noqa: F401 - autouse: every test starts from a fresh NVML boundary
    gpu,
    install,
    make_pynvml,
    proc,
)

import planner.hardware as hw

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
    gpus = ([gpu(A100, uuid=f"GPU-{i}", used=i * GiB) for i in range(2)]
            + [gpu(RTX4090, uuid=f"GPU-{i}") for i in (2, 3)])
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
    g.update(used=70 * GiB, free=10 * GiB, temp=80, power=399_000, util=(100, 90), name="renamed",
             compute=[proc(7, GiB)])
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
