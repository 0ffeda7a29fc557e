"""``python -m planner recommend`` in words: the GPU, the explanation, the fitting options, what
would fit otherwise, and the ``--gpu any`` ranking. Every table has a header row."""

from __future__ import annotations

from planner.catalog.gpus import memory_text
from planner.hardware_text import table
from planner.recommend import Recommendation
from planner.targets import GpuTarget
from planner.units import GiB, fmt_gib

SHOWN_OPTIONS = 12
"""Fitting options listed under a recommendation, fastest first (the JSON has them all)."""


def gpu_line(g: GpuTarget) -> str:
    """``1 x T4 (16 GB datasheet, 15 GiB usable; catalog)``: the memory plans are checked against."""
    memory = memory_text(g.spec) if g.source == "catalog" else fmt_gib(g.memory_bytes / GiB)
    if g.source == "custom":
        memory += f", speed and price of {g.spec.name}"
    return f"{g.count} x {g.name} ({memory}; {g.source})"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def recommendation_lines(rec: Recommendation) -> list[str]:
    lines = [gpu_line(rec.gpu), *(f"warning: {w}" for w in rec.warnings), rec.explanation]
    fitting = sorted((o for o in rec.options if o.fits), key=lambda o: -o.tokens_per_second)
    if fitting:
        rows = [[" method", "quant", "optimizer", "ckpt", "batch", "GiB", "free", "max batch", "max seq", "tok/s",
                 "hours", "$"]]
        for o in fitting[:SHOWN_OPTIONS]:
            s = o.setup
            rows.append([("*" if rec.best is o else " ") + s.method, s.quant or "-", s.optimizer,
                         s.checkpointing, str(s.batch_size),
                         f"{o.device_used_bytes / GiB:.1f}", f"{o.headroom_bytes / GiB:.1f}", str(o.max_batch_size),
                         str(o.max_seq_len), f"{o.tokens_per_second:.0f}", _hours(o.hours), _cost(o.cost_usd)])
        lines += [""] + table(rows, right=set(range(4, 12)))
    if rec.alternatives:
        lines += ["", "what would fit:"] + [f"  - {a.line}" for a in rec.alternatives]
    return lines


def ranking_lines(ranked: list[Recommendation]) -> list[str]:
    """``--gpu any``: one row per catalog GPU that fits, in the given order (cheapest first)."""
    if not ranked:
        return ["no catalog GPU fits this configuration on its own; try --num-gpus with --sharding fsdp"]
    rows = [["GPU", "datasheet", "usable", "method", "quant", "needs", "free", "tok/s", "hours", "$"]]
    for r in ranked:
        o, g = r.best, r.gpu
        assert o is not None, "the ranking holds only GPUs something fits on"
        rows.append([g.name, f"{g.spec.datasheet_gb:g} GB", f"{g.memory_bytes / GiB:.2f} GiB", o.setup.method,
                     o.setup.quant or "-", f"{o.device_used_bytes / GiB:.1f} GiB",
                     f"{o.headroom_bytes / g.memory_bytes:.0%}", f"{o.tokens_per_second:,.0f}", _hours(o.hours),
                     "no price" if o.cost_usd is None else _cost(o.cost_usd)])
    return table(rows, right={1, 2, 5, 6, 7, 8, 9})
