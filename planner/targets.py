"""The GPU a plan is for: detected (NVML), picked from the catalog, or typed in. One set of
constructors for the CLI and the GUI, so both plan against the same memory.

Memory is always what the driver reports: NVML's own total for a detected GPU (it wins over the
catalog's, which only stands in when NVML cannot say), the catalog's driver-reported total for a
catalog GPU, the typed size for a custom one. Never the datasheet's GB.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog.gpus import GpuSpec, gpu_catalog, match_nvml
from planner.settings import Prices, with_user_price
from planner.units import GiB

DEFAULT_CATALOG_GPU = "RTX 4090"
"""What is planned for when nothing better is known: the most common fine-tuning card."""


@dataclass(frozen=True)
class GpuTarget:
    name: str
    memory_bytes: int
    """Per GPU, as the driver reports it (nvidia-smi / NVML), or as typed for a custom GPU."""
    count: int
    source: str
    """``nvml`` (detected), ``catalog`` or ``custom`` (memory typed in)."""
    spec: GpuSpec
    """Speed, power and price; for a custom GPU, the catalog GPU nearest in memory (said so)."""


def nearest_spec(memory_bytes: int) -> GpuSpec:
    """The catalog GPU closest in memory (the faster one on a tie): its speed, power and price
    stand in for a GPU the catalog lacks."""
    return min(gpu_catalog().values(), key=lambda g: (abs(g.memory_bytes - memory_bytes), -g.peak_flops))


def detected_target(name: str | None, memory_total: int | None, index: int, count: int,
                    prices: Prices) -> GpuTarget:
    """A GPU NVML sees: its name and its total memory, the catalog's speed and price (the entry
    NVML's name and total match, else the one nearest in memory)."""
    spec = match_nvml(name, memory_total) if name else None
    if spec is None:
        spec = nearest_spec(memory_total) if memory_total else gpu_catalog()[DEFAULT_CATALOG_GPU]
    memory = memory_total or spec.memory_bytes
    return GpuTarget(name or f"GPU {index}", memory, count, "nvml", with_user_price(spec, prices))


def catalog_target(spec: GpuSpec, count: int, prices: Prices) -> GpuTarget:
    return GpuTarget(spec.name, spec.memory_bytes, count, "catalog", with_user_price(spec, prices))


def custom_target(gib: float, count: int, prices: Prices) -> GpuTarget:
    """A GPU known only by its memory (``--gpu-memory-gib``, the GUI's custom size)."""
    memory = int(gib * GiB)
    return GpuTarget(f"custom {gib:g} GiB GPU", memory, count, "custom", with_user_price(nearest_spec(memory), prices))
