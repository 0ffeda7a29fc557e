"""A stand-in ``pynvml`` for tests: GPUs, processes and every error path, no driver needed."""

from __future__ import annotations

import collections
import sys
import types
from types import SimpleNamespace

import pytest

import planner.nvml as nvml

GiB = 1024**3
MiB = 1024**2
GONE_PID = 2**22 + 12345  # above Linux's largest pid_max: psutil can't see it


# --- the fake pynvml -----------------------------------------------------------------------------

class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: str() is NVML's message."""


def _error_class(name: str, message: str) -> type[FakeNVMLError]:
    return type(name, (FakeNVMLError,), {"__init__": lambda self: FakeNVMLError.__init__(self, message)})


NotSupported = _error_class("NVMLError_NotSupported", "Not Supported")
NoPermission = _error_class("NVMLError_NoPermission", "Insufficient Permissions")
GpuIsLost = _error_class("NVMLError_GpuIsLost", "GPU is lost")
FunctionNotFound = _error_class("NVMLError_FunctionNotFound", "Function Not Found")


class NVMLLibraryMismatchError(Exception):
    """What nvidia-ml-py raises for an unversioned call whose newest version the driver lacks."""


def proc(pid, used):
    return SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)


A100 = dict(name=b"NVIDIA A100-SXM4-80GB", uuid=b"GPU-aaaa", total=80 * GiB, used=1 * GiB, free=79 * GiB,
            util=(37, 12), temp=45, power=250_500, limit=400_000, cc=(8, 0), mig=[0, 0],
            compute=[], graphics=[])
RTX4090 = dict(name="NVIDIA GeForce RTX 4090", uuid="GPU-bbbb", total=24 * GiB, used=3 * GiB, free=21 * GiB,
               util=(99, 80), temp=71, power=420_000, limit=450_000, cc=(8, 9), mig=NotSupported(),
               compute=[], graphics=[])


def gpu(base=A100, **changes):
    return dict(base, **changes)


def make_pynvml(gpus=(), init_error=None, fail=None, calls=None, driver=b"550.54.15", cuda=12040,
                process_names=None, extra=None):
    """A fake pynvml. ``gpus``: dicts like A100; any value may be an exception, which the query raises.

    ``fail`` names a function that raises "GPU is lost"; ``calls`` (a Counter) counts every call;
    ``process_names``: pid -> what nvmlSystemGetProcessName returns (or raises); ``extra``: more functions.
    """
    calls = collections.Counter() if calls is None else calls
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    for cls in (NotSupported, NoPermission, GpuIsLost, FunctionNotFound):
        setattr(mod, cls.__name__, cls)
    mod.NVMLLibraryMismatchError = NVMLLibraryMismatchError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.NVML_DEVICE_MIG_ENABLE = 1
    mod.NVML_DEVICE_MIG_DISABLE = 0

    def value(v):
        if isinstance(v, Exception):
            raise v.with_traceback(None)
        return v

    def field(handle, key):
        return value(gpus[handle[1]][key])

    def nvmlInit():
        if init_error is not None:
            raise init_error

    def nvmlShutdown():
        pass

    def nvmlDeviceGetCount():
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i):
        value(gpus[i].get("handle"))
        return ("handle", i)

    def nvmlDeviceGetMemoryInfo(handle):
        g = gpus[handle[1]]
        value(g.get("memory"))
        return SimpleNamespace(total=g["total"], used=g["used"], free=g["free"])

    def nvmlDeviceGetUtilizationRates(handle):
        gpu_pct, mem_pct = field(handle, "util")
        return SimpleNamespace(gpu=gpu_pct, memory=mem_pct)

    def nvmlDeviceGetTemperature(handle, sensor):
        assert sensor == mod.NVML_TEMPERATURE_GPU
        return field(handle, "temp")

    def nvmlDeviceGetEnforcedPowerLimit(handle):
        return field(handle, "limit")

    def nvmlDeviceGetPowerManagementLimit(handle):
        return value(gpus[handle[1]].get("management_limit", NotSupported()))

    def nvmlSystemGetProcessName(pid):
        names = process_names or {}
        return value(names.get(pid, NotSupported()))

    functions = dict(
        nvmlInit=nvmlInit, nvmlShutdown=nvmlShutdown, nvmlDeviceGetCount=nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex=nvmlDeviceGetHandleByIndex, nvmlDeviceGetMemoryInfo=nvmlDeviceGetMemoryInfo,
        nvmlDeviceGetName=lambda h: field(h, "name"), nvmlDeviceGetUUID=lambda h: field(h, "uuid"),
        nvmlDeviceGetUtilizationRates=nvmlDeviceGetUtilizationRates, nvmlDeviceGetTemperature=nvmlDeviceGetTemperature,
        nvmlDeviceGetPowerUsage=lambda h: field(h, "power"),
        nvmlDeviceGetEnforcedPowerLimit=nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceGetPowerManagementLimit=nvmlDeviceGetPowerManagementLimit,
        nvmlDeviceGetCudaComputeCapability=lambda h: field(h, "cc"), nvmlDeviceGetMigMode=lambda h: field(h, "mig"),
        nvmlDeviceGetComputeRunningProcesses=lambda h: list(field(h, "compute")),
        nvmlDeviceGetGraphicsRunningProcesses=lambda h: list(field(h, "graphics")),
        nvmlSystemGetDriverVersion=lambda: value(driver),
        nvmlSystemGetCudaDriverVersion_v2=lambda: value(cuda), nvmlSystemGetCudaDriverVersion=lambda: value(cuda),
        nvmlSystemGetProcessName=nvmlSystemGetProcessName,
    )
    functions.update(extra or {})
    if fail is not None:
        def broken(*args):
            raise GpuIsLost()
        functions[fail] = broken

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    for name, fn in functions.items():
        if fn is not None:
            setattr(mod, name, counted(name, fn))
    return mod


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch):
    """Every test starts with NVML not started and keeps its shutdown hook out of atexit."""
    monkeypatch.setattr(nvml, "_session", None)
    monkeypatch.setattr(nvml, "_failure", None)
    monkeypatch.setattr(nvml, "_atexit_registered", False)
    registered = []
    monkeypatch.setattr(nvml.atexit, "register", registered.append)
    return registered


def install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module
