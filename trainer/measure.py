"""How much memory a run used and may use: the figure compared with the planner's prediction."""

from __future__ import annotations


def measured_peak(device: str) -> int:
    """CUDA's peak allocated bytes on a GPU; on the CPU the process's peak RSS."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def device_budget(device: str) -> int:
    """Memory the run may use: the GPU's total, or the host RAM available on the CPU."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    import psutil

    return int(psutil.virtual_memory().available)
