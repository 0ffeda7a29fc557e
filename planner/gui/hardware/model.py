"""The Hardware page's logic, free of Qt: which GPU to plan for, and the bounded sample history.

Widgets only format what these return (DESIGN.md rule 4), and the tests can check the choices
without building a window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from planner import targets
from planner.catalog.gpus import GpuSpec, gpu_catalog, match_nvml
from planner.hardware import Gpu
from planner.settings import load_prices
from planner.targets import DEFAULT_CATALOG_GPU, GpuTarget, nearest_spec  # noqa: F401  (the pages import them from here)

CUSTOM_PREFIX = "custom:"
"""``plan/gpu`` holds a catalog name, or ``custom:<GiB>`` for memory typed in."""


def catalog_entry(gpu: Gpu) -> GpuSpec | None:
    """The catalog entry NVML's name and total memory map to, or None."""
    return match_nvml(gpu.name, gpu.memory_total) if gpu.name else None


def nvml_target(gpu: Gpu, count: int = 1) -> GpuTarget:
    """Plan for this detected GPU: NVML's name and total memory (it wins over the catalog's), the
    catalog's speed and price."""
    return targets.detected_target(gpu.name, gpu.memory_total, gpu.index, count, load_prices())


def catalog_target(name: str, count: int = 1) -> GpuTarget:
    return targets.catalog_target(gpu_catalog()[name], count, load_prices())


def custom_target(gib: float, count: int = 1) -> GpuTarget:
    """A GPU known only by its memory; named as the CLI names ``--gpu-memory-gib`` targets."""
    return targets.custom_target(gib, count, load_prices())


def parse_choice(raw: object) -> tuple[str, float | None] | None:
    """A stored ``plan/gpu`` value -> ("catalog", None) with the name, or ("custom", GiB); None
    when it is missing or no longer valid (a catalog entry renamed since)."""
    if not isinstance(raw, str) or not raw:
        return None
    if raw.startswith(CUSTOM_PREFIX):
        try:
            gib = float(raw[len(CUSTOM_PREFIX):])
        except ValueError:
            return None
        return ("custom", gib) if math.isfinite(gib) and gib > 0 else None
    return (raw, None) if raw in gpu_catalog() else None


def same_kind(gpus: Sequence[Gpu], gpu: Gpu) -> int:
    """How many detected GPUs match ``gpu`` (name and memory): a plan for N GPUs assumes N equal
    ones, so a mixed machine can only use as many as it has of one kind."""
    return sum(1 for g in gpus if (g.name, g.memory_total) == (gpu.name, gpu.memory_total))


class History:
    """Fixed-size ring buffers of (time, one value per series), so memory stays bounded however
    long the app runs.

    Each sample is written twice, at ``i`` and ``i + capacity``: the newest ``capacity`` samples
    are then always one contiguous slice, handed to the chart without a ``np.roll`` copy.
    """

    def __init__(self, series: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.series = series
        self.capacity = capacity
        self._t = np.zeros(2 * capacity)
        self._v = np.full((series, 2 * capacity), np.nan)
        self._head = 0  # where the next sample goes, in [0, capacity)
        self.count = 0

    def append(self, t: float, values: Sequence[float]) -> None:
        """``values`` has one entry per series; NaN where unknown (the chart leaves a gap)."""
        i, j = self._head, self._head + self.capacity
        self._t[i] = self._t[j] = t
        self._v[:, i] = self._v[:, j] = values
        self._head = (self._head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def _window(self) -> slice:
        end = self._head + self.capacity
        return slice(end - self.count, end)

    def times(self) -> np.ndarray:
        """Sample times, oldest first (a view: copy before keeping it)."""
        return self._t[self._window()]

    def values(self, series: int) -> np.ndarray:
        """One series' values, aligned with ``times()`` (a view)."""
        return self._v[series, self._window()]

    def resize(self, capacity: int) -> None:
        """A new window length; the newest samples that still fit are kept."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        keep = min(self.count, capacity)
        t = self.times()[self.count - keep:]
        v = self._v[:, self._window()][:, self.count - keep:]
        self._t = np.zeros(2 * capacity)
        self._v = np.full((self.series, 2 * capacity), np.nan)
        for offset in (0, capacity):  # both copies, as append() keeps them
            self._t[offset:offset + keep] = t
            self._v[:, offset:offset + keep] = v
        self.capacity, self.count, self._head = capacity, keep, keep % capacity
