"""The micro-batch a plan computes, given its data's lengths (planner/samples.py): padded to its
longest example, or packed into blocks of exactly ``seq_len``.

Time is planned at the average micro-batch (``as_run``); memory at the longest one (``longest_run``),
the micro-batch that holds the data's longest example, cut at ``seq_len``.
"""

from __future__ import annotations

from dataclasses import replace

from planner.options import TrainSetup


def as_run(setup: TrainSetup) -> tuple[TrainSetup, float]:
    """(``setup`` at the length the GPU computes on average, the share of those positions that are
    data): packed, or the data's lengths unknown, every position is data at ``seq_len``; unpacked,
    each micro-batch at its expected padded length, of which the examples' own tokens are the mean."""
    lengths = setup.lengths
    if lengths is None or setup.packing:
        return setup, 1.0
    ran = replace(setup, seq_len=max(1, round(lengths.padded(setup.batch_size, setup.seq_len))))
    return ran, lengths.mean(setup.seq_len) / ran.seq_len


def longest_run(setup: TrainSetup) -> TrainSetup:
    """``setup`` at its longest micro-batch, the one memory must hold: unpacked, padded to the
    data's longest example when that is shorter than ``seq_len``; otherwise ``setup`` itself."""
    lengths = setup.lengths
    if lengths is None or setup.packing or lengths.longest >= setup.seq_len:
        return setup
    return replace(setup, seq_len=lengths.longest)
