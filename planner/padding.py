"""What padding costs a plan, in the words of the recommendation (planner/batch_shape.py)."""

from __future__ import annotations

from dataclasses import replace

from planner.batch_shape import as_run
from planner.catalog import Architecture
from planner.catalog.gpus import GpuSpec
from planner.cost import run_cost
from planner.options import TrainSetup

WORTH_SAYING = 0.10
"""Padding below this share of the computed positions goes unsaid."""


def padding_note(arch: Architecture, setup: TrainSetup, gpu: GpuSpec, tokens_per_second: float) -> str:
    """How much of an unpacked plan's micro-batch is padding, and how fast packing would train;
    empty when the data's lengths are unknown, the plan packs, or padding is under 10%."""
    ran, data_share = as_run(setup)  # all data (a share of 1) when packed or the lengths are unknown
    if setup.lengths is None or 1 - data_share < WORTH_SAYING:
        return ""
    packed = run_cost(arch, replace(setup, packing=True), gpu).tokens_per_second
    return (f" Unpacked, a micro-batch of {setup.batch_size} examples is padded to ~{ran.seq_len:,} tokens, "
            f"{setup.lengths.mean(setup.seq_len):,.0f} of them data on average ({1 - data_share:.0%} padding); "
            f"packing would train {packed / tokens_per_second:.1f}x as fast.")
