"""Which GPUs a run trains on, as data: the Train form's GPU choice, its processes and environment.

Qt-free. One process per chosen GPU (TrainConfig ``num_processes``); the trainer starts torchrun
itself when there are several. The GPUs are picked for the trainer process with
``CUDA_VISIBLE_DEVICES``, in NVML's numbering (what the Hardware page shows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planner.gui.train.fields import FieldError
from planner.units import GiB

NO_GPU_NOTE = "No GPU: trains on the CPU, one process"
NONE_CHOSEN = "Choose at least one GPU"


@dataclass(frozen=True)
class GpuOption:
    """One GPU the form offers."""

    index: int
    """NVML index (the Hardware page's "GPU 0", "GPU 1")."""
    label: str
    """"GPU 0 · NVIDIA A100-SXM4-80GB · 80 GiB"."""


def gpu_options(gpus: Iterable[Any]) -> tuple[GpuOption, ...]:
    """The checkboxes for ``planner.hardware`` GPUs (anything with index, name and memory_total)."""
    out = []
    for g in gpus:
        parts = [f"GPU {g.index}", g.name or "unknown GPU"]
        if g.memory_total:
            parts.append(f"{g.memory_total / GiB:.3g} GiB")
        out.append(GpuOption(g.index, " · ".join(parts)))
    return tuple(out)


def detected_gpus() -> tuple[GpuOption, ...]:
    """The GPUs NVML reports now (none on a machine without a driver); never raises."""
    from planner import hardware  # NVML is loaded only when a page asks

    return gpu_options(hardware.sample().gpus)


def num_processes(chosen: Sequence[int]) -> int:
    """One process per chosen GPU; one (on the CPU) when none is chosen or there is none."""
    return max(len(chosen), 1)


def check_choice(present: Sequence[int], chosen: Sequence[int]) -> FieldError | None:
    """With GPUs on the machine, a run needs at least one of them (the CPU is no fallback here)."""
    if present and not chosen:
        return FieldError("gpus", NONE_CHOSEN)
    return None


def launch_env(present: Sequence[int], chosen: Sequence[int]) -> dict[str, str]:
    """Environment for the trainer process: the chosen GPUs only; nothing on a machine without GPUs.

    CUDA numbers GPUs fastest first unless told otherwise, NVML by PCI bus: PCI_BUS_ID makes the
    indices the user checked mean the same GPUs to CUDA."""
    if not present or not chosen:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in chosen)}


def env_prefix(env: Mapping[str, str]) -> str:
    """``A=1 B=2 `` before a logged command line: pasted into a shell, it runs as the app ran it."""
    return "".join(f"{k}={v} " for k, v in env.items())


def first_gpus(present: Sequence[int], wanted: int) -> tuple[int, ...]:
    """The first ``wanted`` GPUs, or all of them when there are fewer."""
    return tuple(present[:max(wanted, 1)])


def resume_gpus(present: Sequence[int], chosen: Sequence[int], run_processes: int) -> tuple[int, ...]:
    """The GPUs a resumed run gets: the checked ones when they match its process count, else its
    first GPUs; none (every GPU visible, as before the choice existed) when the machine has too few."""
    if len(chosen) == run_processes:
        return tuple(chosen)
    return first_gpus(present, run_processes) if run_processes <= len(present) else ()


def mismatch_note(wanted: int, present: Sequence[int]) -> str | None:
    """Why a plan can't train as planned here; None when the machine has the GPUs it asks for."""
    have = len(present)
    if wanted <= max(have, 1):
        return None
    if not have:
        return f"The plan asks for {wanted} GPUs; this machine has none: the run trains on the CPU, one process."
    which = {1: "it is checked", 2: "both are checked"}.get(have, f"all {have} are checked")
    return (f"The plan asks for {wanted} GPUs; this machine has {have}: {which}. Plan again with {have} "
            f"GPU{'s' if have > 1 else ''} on the Plan page to check the memory per GPU.")
