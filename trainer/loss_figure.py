"""A loss curve as a small hand-written SVG 1.1 file (no plotting library): the model card's figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

Points = Sequence[tuple[float, float]]
COLORS = ("#1f77b4", "#d62728")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    raw = (hi - lo) / max(count, 1) or abs(hi) or 1.0
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return ticks


def _label(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{digits}f}"


def loss_svg(series: Sequence[tuple[str, Points]], width: int = 640, height: int = 320,
             max_points: int = 2000) -> str:
    """``series``: (name, [(step, loss), ...]) pairs, drawn as polylines on shared axes with a
    legend; a long series is thinned to about ``max_points`` points (its last one kept)."""
    drawn = [(name, list(pts)) for name, pts in series if pts]
    if not drawn:
        raise ValueError("no points to draw")
    xs = [x for _, pts in drawn for x, _ in pts]
    ys = [y for _, pts in drawn for _, y in pts]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1 = xt[0], max(xt[-1], xt[0] + 1e-9)
    y0, y1 = yt[0], max(yt[-1], yt[0] + 1e-9)
    left, right, top, bottom = 56, width - 16, 16, height - 40

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           "<title>loss curve</title>", f'<rect width="{width}" height="{height}" fill="white"/>']
    for tick in xt:
        x, label = px(tick), _label(tick, xt)
        out += [f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="black"/>',
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{label}</text>']
    for tick in yt:
        y, label = py(tick), _label(tick, yt)
        out += [f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e0e0e0"/>',
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>']
    out.append(f'<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="black"/>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 6}" text-anchor="middle">step</text>')
    out.append(f'<text x="14" y="{(top + bottom) / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">loss</text>')
    for i, (name, pts) in enumerate(drawn):
        stride = max(1, math.ceil(len(pts) / max_points))
        kept = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in kept)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        if len(kept) <= 50:  # a few points (evaluations): each one marked
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}"/>' for x, y in kept]
        ly = top + 8 + 16 * i
        out += [f'<line x1="{right - 110}" y1="{ly}" x2="{right - 90}" y2="{ly}" stroke="{color}" stroke-width="2"/>',
                f'<text x="{right - 84}" y="{ly + 4}">{escape(name)}</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"
