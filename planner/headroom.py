"""When a plan fits a GPU, and when it fits with room to spare: one rule for the recommendation
and for every alternative it offers.

The estimate is a prediction: a longer sample than the average, a fragmentation spike or a
library upgrade can add a few percent, so a plan that uses all of the GPU is a gamble. The
recommender prefers plans that leave ``HEADROOM`` of the memory free (it accepts a tighter one
only when nothing comfortable exists, and says so); what it offers instead when nothing fits must
clear the same bar, or it would advise what it would itself warn against.

Memory is the driver-reported total (``GpuTarget.memory_bytes``): never the datasheet's GB.
"""

from __future__ import annotations

HEADROOM = 0.10
"""Fraction of the GPU's memory a comfortable plan leaves free."""


def fits(device_used_bytes: int, memory_bytes: int) -> bool:
    """The plan's predicted device memory is within the GPU's total."""
    return device_used_bytes <= memory_bytes


def comfortable_budget(memory_bytes: int) -> int:
    """The most device memory a plan may use and still leave ``HEADROOM`` free."""
    return int(memory_bytes * (1 - HEADROOM))


def fits_comfortably(device_used_bytes: int, memory_bytes: int) -> bool:
    return device_used_bytes <= comfortable_budget(memory_bytes)


def fits_host(host_bytes: int, host_memory_bytes: int | None) -> bool:
    """What a plan holds in host RAM (offloaded activations or state) leaves ``HEADROOM`` of the
    machine's RAM for the rest of the process (the model's loading, the data, the OS); True when
    the machine's RAM is not known."""
    return host_memory_bytes is None or host_bytes <= comfortable_budget(host_memory_bytes)
