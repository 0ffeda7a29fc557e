"""How much memory a run used and may use: the figure compared with the planner's prediction."""

from __future__ import annotations

import time
from collections.abc import Callable


def measured_peak(device: str) -> int:
    """CUDA's peak allocated bytes on a GPU; on the CPU the process's peak RSS."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def gpu_name(device: str) -> str | None:
    """The GPU this process trains on, as CUDA names it (None on the CPU): measurement rows
    exported from the Runs page say which card they were measured on."""
    if device != "cuda":
        return None
    import torch

    return str(torch.cuda.get_device_name())


def device_budget(device: str) -> int:
    """Memory the run may use: the GPU's total, or the host RAM available on the CPU."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    import psutil

    return int(psutil.virtual_memory().available)


def same_gpu(cuda_uuid: str | None, nvml_uuid: str | None) -> bool:
    """Whether torch's device UUID and NVML's name one GPU: NVML writes ``GPU-<uuid>``, torch the
    bare UUID (either may come in upper case)."""
    if not cuda_uuid or not nvml_uuid:
        return False

    def bare(uuid: str) -> str:
        uuid = uuid.strip().lower()
        return uuid[4:] if uuid.startswith("gpu-") else uuid

    return bare(cuda_uuid) == bare(nvml_uuid)


class DeviceMemory:
    """NVML's used memory of the run's GPU (what nvidia-smi shows: every process on it plus the
    driver's share), read at logging steps.

    ``nvmlDeviceGetMemoryInfo`` is a driver call of some microseconds, so it is read at every
    logging step; should one read take longer than ``SLOW_S`` (a busy or remote driver), it is read
    only every ``EVERY_WHEN_SLOW`` calls from then on, and the calls between repeat the last value.
    ``read``: the query (None when NVML does not answer); ``clock``: seconds, for the timing."""

    SLOW_S = 1e-3
    EVERY_WHEN_SLOW = 10

    def __init__(self, read: Callable[[], int | None], clock: Callable[[], float] = time.perf_counter) -> None:
        self._read, self._clock = read, clock
        self.every = 1
        self._calls = 0
        self.last: int | None = None
        self.peak: int | None = None
        """The largest value read so far (the end event's ``peak_device_bytes``)."""

    def __call__(self) -> int | None:
        self._calls += 1
        if (self._calls - 1) % self.every:
            return self.last
        start = self._clock()
        self.last = self._read()
        if self._clock() - start > self.SLOW_S:
            self.every = self.EVERY_WHEN_SLOW
        if self.last is not None:
            self.peak = max(self.peak or 0, self.last)
        return self.last


def nvml_used() -> Callable[[], int | None] | None:
    """A reader of NVML's used bytes for the GPU this process trains on (torch's current CUDA
    device, found by UUID: NVML numbers GPUs in PCI order, CUDA_VISIBLE_DEVICES may not), or None
    when NVML or the GPU's UUID is unavailable."""
    from planner import nvml

    try:
        import torch

        cuda_uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    except Exception:  # an old torch without .uuid, or no device
        return None
    session, _ = nvml.session(refresh=True)
    if session is None:
        return None
    device = next((d for d in session.devices if same_gpu(cuda_uuid, d.uuid)), None)
    if device is None:
        return None

    def read() -> int | None:
        info = nvml.query(session.nv, "nvmlDeviceGetMemoryInfo", device.handle)
        used = getattr(info, "used", None)
        return int(used) if isinstance(used, int) else None

    return read
