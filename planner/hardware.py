"""The hardware boundary: which NVIDIA GPUs this machine has, what they are doing, and the host.

Two entry points, both returning an ``Inventory`` and never raising:

- ``inventory()``: the full picture; (re)starts NVML if needed and re-enumerates the GPUs.
- ``sample()``: what a 1 Hz GUI timer calls; re-reads only the dynamic fields (memory,
  utilisation, temperature, power, processes) of the GPUs found earlier, at microseconds per GPU.

Without a driver both return no GPU and the reason, so the planner works the same on a machine
without one (it then plans for a GPU the user picks). NVML itself lives in ``planner.nvml``.
Values are in base units: bytes, watts, degrees Celsius, percent.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from planner import nvml


@dataclass(frozen=True)
class GpuProcess:
    """A process holding a context on a GPU."""

    pid: int
    name: str | None
    """Executable name (psutil, else NVML); None when the process is not visible from here."""
    used_memory: int | None
    """Bytes of GPU memory; None when the driver does not report it (Windows WDDM, WSL)."""
    kind: str
    """"C" compute, "G" graphics, "C+G" both, as nvidia-smi writes it."""


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML reports it; any field NVML does not answer is None."""

    index: int
    """NVML index (follows PCI bus order, which CUDA_VISIBLE_DEVICES may not)."""
    name: str | None
    uuid: str | None
    memory_total: int | None
    """Bytes."""
    memory_used: int | None
    """Bytes in use on the device, all processes plus the driver's reservation."""
    memory_free: int | None
    """Bytes."""
    utilization_gpu: int | None
    """Percent of the last sample period in which a kernel was running."""
    utilization_memory: int | None
    """Percent of the last sample period in which device memory was read or written (not fullness)."""
    temperature_c: int | None
    """GPU core temperature, degrees Celsius."""
    power_w: float | None
    """Power draw, watts (NVML reports milliwatts)."""
    power_limit_w: float | None
    """Enforced power limit, watts."""
    compute_capability: tuple[int, int] | None
    """CUDA compute capability (major, minor), e.g. (8, 0) for an A100."""
    mig_enabled: bool | None
    """Current MIG mode; None where the GPU has no MIG."""
    processes: tuple[GpuProcess, ...] | None
    """Compute and graphics processes; None when NVML refuses the list (e.g. no permission)."""
    process_memory_available: bool | None
    """False when the driver reports processes without their memory (WDDM/WSL); None if unknown."""


@dataclass(frozen=True)
class HostInfo:
    """The machine's CPU and RAM (psutil); None where it can't be read."""

    cpu_count: int | None
    """Logical cores."""
    cpu_model: str | None
    cpu_percent: float | None
    """Busy share of all cores since the previous sample; None on the first one."""
    load_average: float | None
    """Runnable processes averaged over one minute (no such figure on Windows)."""
    ram_total: int | None
    """Bytes."""
    ram_available: int | None
    """Bytes a new process can use without swapping."""


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[Gpu, ...]
    host: HostInfo
    reason: str | None
    """Why no GPU is listed (no driver, mismatch, permissions), or None."""
    driver_version: str | None = None
    """NVIDIA driver, e.g. "550.54.15"."""
    cuda_driver_version: str | None = None
    """Newest CUDA the driver supports, e.g. "12.4"."""
    notes: tuple[str, ...] = ()
    """What is missing and why: skipped GPUs, refused process lists, unreported process memory."""

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [asdict(g) for g in self.gpus],
            "host": asdict(self.host),
            "reason": self.reason,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "notes": list(self.notes),
        }


def inventory() -> Inventory:
    """Every NVIDIA GPU NVML sees, plus the host; on failure no GPU and the reason."""
    return _snapshot(refresh=True)


def sample() -> Inventory:
    """Like ``inventory()`` but cheap: re-reads only the dynamic fields of the GPUs already found.

    The first call enumerates; afterwards neither NVML nor the GPU list is re-initialised, and a
    failed start is not retried (``inventory()`` retries it).
    """
    return _snapshot(refresh=False)


def shutdown() -> None:
    """Release NVML now (it also happens at exit); the next call starts it again."""
    nvml.shutdown()


def _snapshot(refresh: bool) -> Inventory:
    host = host_info()
    try:
        session, error = nvml.session(refresh)
        if session is None:
            return Inventory((), host, error)
        notes = list(session.notes)
        devices = session.devices
        gpus = [_gpu(session, dev, notes) for dev in devices]
        session.forget_names({p.pid for g in gpus for p in g.processes or ()})
        return Inventory(tuple(gpus), host, session.error, session.driver_version,
                         session.cuda_driver_version, tuple(notes))
    except Exception as exc:  # a bug or a binding doing something new: still a reason, not a crash
        return Inventory((), host, nvml.reason(exc))


def _gpu(session: nvml.Session, dev: nvml.Device, notes: list[str]) -> Gpu:
    raw, error = session.processes(dev)
    if raw is None:
        processes, memory_known = None, None
        notes.append(f"GPU {dev.index}: process list unavailable: {error}")
    else:
        processes = tuple(GpuProcess(pid, session.process_name(pid), used, kind) for pid, used, kind in raw)
        memory_known = all(p.used_memory is not None for p in processes) if processes else None
        if memory_known is False:
            notes.append(f"GPU {dev.index}: the driver does not report per-process memory (Windows WDDM or WSL)")
    return Gpu(index=dev.index, name=dev.name, uuid=dev.uuid, compute_capability=dev.compute_capability,
               mig_enabled=dev.mig_enabled, processes=processes, process_memory_available=memory_known,
               **session.read(dev))


_cpu_static: tuple[int | None, str | None] | None = None
_cpu_primed = False


def _cpu_model() -> str | None:
    """The CPU's marketing name where reading it is cheap (no subprocess)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                        return value.strip()
        except OSError:
            return None
        return None
    if sys.platform == "win32":
        import platform

        return platform.processor() or None  # an environment variable on Windows
    return None  # macOS would need a sysctl subprocess


@functools.cache
def ram_total() -> int | None:
    """This machine's RAM in bytes (None where psutil cannot say): what a plan for its own GPU may
    offload to. Read once; unlike :func:`host_info` it leaves the CPU-load sampling alone."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unsupported platform
        return None


def host_info() -> HostInfo:
    """CPU and RAM of this machine; the static parts are read once."""
    global _cpu_static, _cpu_primed
    if _cpu_static is None:
        _cpu_static = (os.cpu_count(), _cpu_model())
    count, model = _cpu_static
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    try:
        import psutil

        vm = psutil.virtual_memory()
        percent = psutil.cpu_percent(interval=None)  # since the previous call; the first is meaningless
        if not _cpu_primed:
            _cpu_primed, percent = True, None
        return HostInfo(count, model, percent, load, int(vm.total), int(vm.available))
    except Exception:  # psutil missing or unsupported platform: no RAM figures
        return HostInfo(count, model, None, load, None, None)
