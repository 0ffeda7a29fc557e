"""The GPU a plan is for: detected (NVML), picked from the catalog, or typed in."""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog.gpus import GpuSpec


@dataclass(frozen=True)
class GpuTarget:
    name: str
    memory_bytes: int
    count: int
    source: str
    """``nvml`` (detected), ``catalog`` or ``custom`` (memory typed in)."""
    spec: GpuSpec
    """Speed, power and price; for a custom GPU, the catalog GPU nearest in memory (said so)."""
