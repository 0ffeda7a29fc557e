"""The NVML session behind ``planner.hardware``: lazy start, cached handles, queries that return None.

``pynvml`` (nvidia-ml-py) is imported and initialised on first use, once per process, and
``nvmlShutdown`` runs at interpreter exit (the hook is registered once, however often the session
restarts). A failed start becomes a reason string; a full inventory retries it, a 1 Hz sample
reuses it instead of reloading the library every second.

Each GPU is enumerated once: its handle and static facts (name, UUID, total memory, compute
capability, MIG mode) and the driver versions are cached, so a sample only re-reads memory,
utilisation, temperature, power and processes. Every one of those reads goes through ``query``:
NotSupported, NoPermission, a GPU that fell off the bus or a binding newer than the driver makes
that one field None, never an exception in the middle of a UI refresh.

This module returns plain values; ``planner.hardware`` turns them into its dataclasses.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass
from typing import Any

NOT_AVAILABLE = 2**64 - 1
"""NVML_VALUE_NOT_AVAILABLE for unsigned long long fields: what usedGpuMemory holds under Windows
WDDM or WSL, where the OS, not the NVIDIA driver, manages the memory (nvidia-ml-py maps it to None)."""

_MISSING = ("NVMLError_FunctionNotFound", "NVMLLibraryMismatchError")
"""Raised when the binding calls a versioned symbol (e.g. ``..._v3``) the installed driver lacks."""

_lock = threading.RLock()
_session: Session | None = None
_failure: str | None = None  # why the last start failed; a sample reuses it, an inventory retries
_atexit_registered = False


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def reason(exc: BaseException) -> str:
    """One line saying why NVML can't be used (no driver, mismatch, permissions)."""
    if isinstance(exc, ImportError):
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    text = str(exc)
    lowered = text.lower()
    if "library not found" in lowered or "libnvidia-ml" in lowered or "nvml.dll" in lowered:
        return "NVML library not found: no NVIDIA driver"
    if "mismatch" in lowered:
        return "driver/library version mismatch: reboot or reinstall the NVIDIA driver"
    if "permission" in lowered or "no_permission" in lowered:
        return "insufficient permissions to query the GPU"
    return f"NVML unavailable: {text or type(exc).__name__}"


def text(value: Any) -> str | None:
    """NVML strings come back as bytes from older bindings and str from newer ones."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def query(nv: Any, name: str, *args: Any) -> Any:
    """``nv.<name>(*args)``, or None when the call fails for any reason."""
    try:
        return getattr(nv, name)(*args)
    except Exception:  # NVMLError subclasses, a function this binding lacks, undecodable bytes
        return None


def cuda_version(value: Any) -> str | None:
    """nvmlSystemGetCudaDriverVersion's 12040 -> "12.4"."""
    if not isinstance(value, int) or value <= 0:
        return None
    return f"{value // 1000}.{value % 1000 // 10}"


@dataclass(frozen=True)
class Device:
    """One enumerated GPU: its handle and the facts that do not change while NVML runs."""

    index: int
    handle: Any
    name: str | None
    uuid: str | None
    memory_total: int | None
    compute_capability: tuple[int, int] | None
    mig_enabled: bool | None


class Session:
    """A started NVML plus what it enumerated; replaced only by a new start."""

    def __init__(self, nv: Any) -> None:
        self.nv = nv
        self.devices: tuple[Device, ...] = ()
        self.error: str | None = None  # why no GPU is listed
        self.notes: tuple[str, ...] = ()  # GPUs that could not be opened
        self.driver_version: str | None = None
        self.cuda_driver_version: str | None = None
        self._sensor = getattr(nv, "NVML_TEMPERATURE_GPU", 0)
        self._variant: dict[str, str] = {}  # which versioned function this driver answers
        self._names: dict[int, str | None] = {}  # pid -> process name, for the pids still on a GPU

    def call(self, names: tuple[str, ...], *args: Any) -> Any:
        """The first of ``names`` this driver has (remembered), e.g. ``_v3`` then ``_v2``; raises its error."""
        start = self._variant.get(names[0])
        candidates = names[names.index(start):] if start else names
        for i, name in enumerate(candidates):
            try:
                return getattr(self.nv, name)(*args)
            except Exception as exc:
                missing = isinstance(exc, AttributeError) or type(exc).__name__ in _MISSING
                if not missing or i == len(candidates) - 1:
                    raise
                self._variant[names[0]] = candidates[i + 1]
        raise AssertionError("unreachable")

    def enumerate(self) -> None:
        """(Re)list the GPUs and read their static facts: the expensive part, done once per inventory."""
        nv = self.nv
        self.driver_version = text(query(nv, "nvmlSystemGetDriverVersion"))
        try:
            cuda = self.call(("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        except Exception:
            cuda = None
        self.cuda_driver_version = cuda_version(cuda)
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            self.devices, self.notes, self.error = (), (), reason(exc)
            return
        devices, notes, first_error = [], [], None
        for i in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:  # e.g. GPU is lost, or hidden from this container
                notes.append(f"GPU {i} skipped: {_message(exc)}")
                first_error = first_error or exc
                continue
            devices.append(self._device(i, handle))
        self.devices, self.notes = tuple(devices), tuple(notes)
        if devices:
            self.error = None
        else:
            self.error = reason(first_error) if first_error else "NVML found no NVIDIA GPU"

    def _device(self, index: int, handle: Any) -> Device:
        nv = self.nv
        mem = query(nv, "nvmlDeviceGetMemoryInfo", handle)
        cc = query(nv, "nvmlDeviceGetCudaComputeCapability", handle)
        mig = query(nv, "nvmlDeviceGetMigMode", handle)  # (current, pending); NotSupported off A100/H100
        try:
            capability = (int(cc[0]), int(cc[1])) if cc is not None else None
        except (TypeError, ValueError, IndexError):
            capability = None
        try:
            mig_enabled = bool(mig[0] == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)) if mig is not None else None
        except (TypeError, IndexError):
            mig_enabled = None
        return Device(index, handle, text(query(nv, "nvmlDeviceGetName", handle)),
                      text(query(nv, "nvmlDeviceGetUUID", handle)), _int(getattr(mem, "total", None)),
                      capability, mig_enabled)

    def read(self, dev: Device) -> dict[str, Any]:
        """The dynamic fields of one GPU, each None when NVML does not answer it."""
        nv, h = self.nv, dev.handle
        mem = query(nv, "nvmlDeviceGetMemoryInfo", h)
        util = query(nv, "nvmlDeviceGetUtilizationRates", h)
        temperature = query(nv, "nvmlDeviceGetTemperature", h, self._sensor)
        power = query(nv, "nvmlDeviceGetPowerUsage", h)  # milliwatts
        limit = query(nv, "nvmlDeviceGetEnforcedPowerLimit", h)
        if limit is None:
            limit = query(nv, "nvmlDeviceGetPowerManagementLimit", h)
        total = _int(getattr(mem, "total", None))
        return {
            "memory_total": total if total is not None else dev.memory_total,
            "memory_used": _int(getattr(mem, "used", None)),
            "memory_free": _int(getattr(mem, "free", None)),
            "utilization_gpu": _int(getattr(util, "gpu", None)),
            "utilization_memory": _int(getattr(util, "memory", None)),
            "temperature_c": _int(temperature),
            "power_w": power / 1000 if isinstance(power, (int, float)) else None,
            "power_limit_w": limit / 1000 if isinstance(limit, (int, float)) else None,
        }

    def processes(self, dev: Device) -> tuple[list[tuple[int, int | None, str]] | None, str | None]:
        """(pid, used bytes or None, "C"/"G"/"C+G") per process on the GPU, or (None, why) when NVML refuses."""
        found: dict[int, list[Any]] = {}
        errors: list[str] = []
        for kind, base in (("C", "nvmlDeviceGetComputeRunningProcesses"),
                           ("G", "nvmlDeviceGetGraphicsRunningProcesses")):
            try:
                procs = self.call((base, base + "_v2"), dev.handle)
            except Exception as exc:  # NoPermission (another user's container), NotSupported
                errors.append(_message(exc))
                continue
            for p in procs or ():
                pid = _int(getattr(p, "pid", None))
                if pid is None:
                    continue
                used = _int(getattr(p, "usedGpuMemory", None))
                if used is not None and (used < 0 or used >= NOT_AVAILABLE):
                    used = None  # an older binding passes NVML_VALUE_NOT_AVAILABLE through
                if pid in found:
                    entry = found[pid]
                    entry[1] = max((x for x in (entry[1], used) if x is not None), default=None)
                    if kind not in entry[2]:
                        entry[2] += "+" + kind
                else:
                    found[pid] = [pid, used, kind]
        if len(errors) == 2:
            return None, errors[0]
        return [(pid, used, kind) for pid, used, kind in found.values()], None

    def process_name(self, pid: int) -> str | None:
        """psutil's name for a pid (cached while the pid is on a GPU), else NVML's, else None."""
        if pid in self._names:
            return self._names[pid]
        name = None
        try:
            import psutil

            name = psutil.Process(pid).name() or None
        except Exception:  # no psutil, the process ended, another PID namespace, access denied
            path = text(query(self.nv, "nvmlSystemGetProcessName", pid))
            name = os.path.basename(path) if path else None
        self._names[pid] = name
        return name

    def forget_names(self, live: set[int]) -> None:
        """Drop cached names of pids no longer on any GPU (a pid may be reused by another program)."""
        for pid in list(self._names):  # a copy: an inventory in another thread may be adding names
            if pid not in live:
                self._names.pop(pid, None)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def session(refresh: bool) -> tuple[Session | None, str | None]:
    """The running session, started on first use, or (None, why it can't start).

    ``refresh`` (a full inventory) retries a failed start and re-enumerates the GPUs; without it (a
    sample) the cached GPUs and the cached failure are reused.
    """
    global _session, _failure
    with _lock:
        if _session is None:
            if _failure is not None and not refresh:
                return None, _failure
            try:
                import pynvml

                pynvml.nvmlInit()
            except Exception as exc:  # ImportError, NVMLError_*, an unrelated module named pynvml
                _failure = reason(exc)
                return None, _failure
            _register_shutdown()
            _failure = None
            _session = Session(pynvml)
            _session.enumerate()
        elif refresh:
            _session.enumerate()
        return _session, None


def _register_shutdown() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def shutdown() -> None:
    """Shut NVML down (runs at exit); the next query starts it again."""
    global _session, _failure
    with _lock:
        current, _session, _failure = _session, None, None
    if current is not None:
        try:
            current.nv.nvmlShutdown()
        except Exception:  # already shut down, or the library is gone at interpreter exit
            pass
