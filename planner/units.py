"""Byte units and formatting. Binary units are always called KiB/MiB/GiB, never KB/MB/GB."""

from __future__ import annotations

KiB = 1024
MiB = 1024**2
GiB = 1024**3
GB = 10**9
FP32 = 4
"""Bytes of one fp32 element."""


def fmt_bytes(n: float, unit: int = GiB, digits: int = 2) -> str:
    """Format a byte count in one fixed unit, e.g. ``fmt_bytes(3 * GiB) == '3.00 GiB'``."""
    name = {KiB: "KiB", MiB: "MiB", GiB: "GiB", GB: "GB"}[unit]
    return f"{n / unit:.{digits}f} {name}"


def fmt_gib(gib: float) -> str:
    """A GPU's memory as plans use it, to 0.01 GiB without trailing zeros: ``23.99 GiB``, ``80 GiB``
    (one spelling everywhere, so a card never reads 23.99 in one place and 24.0 in the next)."""
    return f"{f'{gib:.2f}'.rstrip('0').rstrip('.')} GiB"


def fmt_count(n: int) -> str:
    """Parameter counts the way papers write them: 6.74B, 143.2M, 52.4K."""
    for div, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}" if div >= 10**9 else f"{n / div:.1f}{suffix}"
    return str(n)
