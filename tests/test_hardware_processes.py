"""planner.nvml: the processes on each GPU, as the driver reports them (or does not).

Whatever NVML does, ``inventory()`` and ``sample()`` return an Inventory and never raise.
"""

from __future__ import annotations

import collections
import json
import os
import sys

from fake_nvml import (  # noqa: E402,F401
    A100,
    GONE_PID,
    RTX4090,
    FunctionNotFound,
    GiB,
    MiB,
    NoPermission,
    NotSupported,
    NVMLLibraryMismatchError,
    fresh_nvml,
    gpu,
    install,
    make_pynvml,
    proc,
)

import planner.hardware as hw
import planner.nvml as nvml

# --- processes -------------------------------------------------------------------------------------

def test_wddm_process_memory_not_available(monkeypatch):
    """Windows WDDM and WSL: NVML lists the processes but not their memory."""
    g = gpu(compute=[proc(GONE_PID, None), proc(GONE_PID + 1, nvml.NOT_AVAILABLE)])
    install(monkeypatch, make_pynvml(gpus=[g]))
    inv = hw.inventory()
    gp = inv.gpus[0]
    assert [(p.pid, p.used_memory) for p in gp.processes] == [(GONE_PID, None), (GONE_PID + 1, None)]
    assert gp.process_memory_available is False
    assert inv.notes == ("GPU 0: the driver does not report per-process memory (Windows WDDM or WSL)",)
    assert json.loads(json.dumps(inv.to_json()))["gpus"][0]["processes"][0]["used_memory"] is None


def test_no_processes_memory_availability_unknown(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[A100]))
    gp = hw.inventory().gpus[0]
    assert gp.processes == () and gp.process_memory_available is None


def test_process_not_visible_anywhere(monkeypatch):
    """A pid from another PID namespace (containers): no name from psutil nor NVML."""
    install(monkeypatch, make_pynvml(gpus=[gpu(compute=[proc(GONE_PID, GiB)])],
                                     process_names={GONE_PID: NoPermission()}))
    (p,) = hw.inventory().gpus[0].processes
    assert (p.pid, p.name, p.used_memory) == (GONE_PID, None, GiB)


def test_process_name_without_psutil(monkeypatch):
    install(monkeypatch, make_pynvml(gpus=[gpu(compute=[proc(GONE_PID, GiB)])],
                                     process_names={GONE_PID: "C:\\Python\\python.exe" if os.sep == "\\"
                                                    else "/opt/conda/bin/python"}))
    monkeypatch.setitem(sys.modules, "psutil", None)
    (p,) = hw.inventory().gpus[0].processes
    assert p.name in ("python", "python.exe")


def test_process_names_cached_while_on_gpu(monkeypatch):
    calls = collections.Counter()
    g = gpu(compute=[proc(GONE_PID, GiB)])
    install(monkeypatch, make_pynvml(gpus=[g], calls=calls, process_names={GONE_PID: "train"}))
    for _ in range(5):
        assert hw.sample().gpus[0].processes[0].name == "train"
    assert calls["nvmlSystemGetProcessName"] == 1
    g["compute"] = []
    hw.sample()  # the process ended: its pid may be reused by another program
    g["compute"] = [proc(GONE_PID, GiB)]
    hw.sample()
    assert calls["nvmlSystemGetProcessName"] == 2


def test_old_driver_falls_back_to_v2_process_query(monkeypatch):
    """nvidia-ml-py calls ..._v3, which drivers before R510 lack; then _v2 is used, and remembered."""
    def mismatch(handle):
        raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match")

    calls = collections.Counter()
    install(monkeypatch, make_pynvml(
        gpus=[A100], calls=calls,
        extra={"nvmlDeviceGetComputeRunningProcesses": mismatch,
               "nvmlDeviceGetComputeRunningProcesses_v2": lambda h: [proc(GONE_PID, GiB)]}))
    for _ in range(3):
        assert [p.pid for p in hw.sample().gpus[0].processes] == [GONE_PID]
    assert calls["nvmlDeviceGetComputeRunningProcesses"] == 1
    assert calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 3


def test_cuda_version_from_older_binding(monkeypatch):
    mod = make_pynvml(gpus=[A100], cuda=11080)
    del mod.nvmlSystemGetCudaDriverVersion_v2
    install(monkeypatch, mod)
    assert hw.inventory().cuda_driver_version == "11.8"


