"""The NVML boundary: which NVIDIA GPUs this machine has, and the host's memory.

NVML starts lazily and every failure becomes a reason string, never an exception, so the
planner works the same on a machine without a driver (it then plans for a GPU the user picks).
"""

from __future__ import annotations

import atexit
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str | None
    memory_total: int
    memory_used: int | None
    memory_free: int | None


@dataclass(frozen=True)
class HostMemory:
    total: int
    available: int


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[Gpu, ...]
    host: HostMemory | None
    reason: str | None
    """Why no GPU is listed (no driver, mismatch, permissions), or None."""

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [asdict(g) for g in self.gpus],
            "host": asdict(self.host) if self.host else None,
            "reason": self.reason,
        }


_nvml: Any = None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ImportError):
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    lowered = text.lower()
    if "library not found" in lowered or "libnvidia-ml" in lowered or "nvml.dll" in lowered:
        return "NVML library not found: no NVIDIA driver"
    if "mismatch" in lowered:
        return "driver/library version mismatch: reboot or reinstall the NVIDIA driver"
    if "permission" in lowered or "no_permission" in lowered:
        return "insufficient permissions to query the GPU"
    return f"NVML unavailable: {text or type(exc).__name__}"


def _init() -> Any:
    global _nvml
    if _nvml is None:
        import pynvml

        pynvml.nvmlInit()
        atexit.register(pynvml.nvmlShutdown)
        _nvml = pynvml
    return _nvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def host_memory() -> HostMemory | None:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return HostMemory(total=vm.total, available=vm.available)
    except Exception:  # psutil missing or unsupported platform: report no host figures
        return None


def inventory() -> Inventory:
    """Every NVIDIA GPU NVML sees, plus host memory; on failure an empty list and the reason."""
    host = host_memory()
    try:
        nv = _init()
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            try:
                uuid: str | None = _text(nv.nvmlDeviceGetUUID(handle))
            except Exception:  # some vGPU/MIG setups refuse the UUID query
                uuid = None
            gpus.append(Gpu(i, _text(nv.nvmlDeviceGetName(handle)), uuid, int(mem.total), int(mem.used), int(mem.free)))
    except Exception as exc:  # NVML raises its own error types; the caller only needs the reason
        return Inventory((), host, _reason(exc))
    return Inventory(tuple(gpus), host, None if gpus else "NVML found no NVIDIA GPU")
