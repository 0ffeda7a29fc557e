"""A data set's example lengths, and what padding or packing makes of them in a training step.

Without packing the trainer pads each micro-batch to its longest example (trainer/data.py
``collate``): the GPU computes every padded position, while throughput counts only the examples'
own tokens (the Trainer's ``include_num_input_tokens_seen="non_padding"``, what the Train page
charts). With packing the examples are concatenated into blocks of exactly ``seq_len`` (the last
block padded), so every position the GPU computes is data.

The data loader shuffles, so a micro-batch of B examples is B draws from the data set, and its
padded length is the expected largest of B draws: with Q the quantile function of the lengths,
E[max] = integral of Q(u) d(u^B) over [0, 1] (the distribution of the largest of B independent
draws is F^B; David & Nagaraja 2003, "Order Statistics", 2.1). At B = 1 that is the mean: one
example is never padded. What a plan makes of them: planner/batch_shape.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import PlannerError

QUANTILE_POINTS = 1001
"""Quantiles kept of a data set's lengths (every 0.1%): enough for the largest of 64 draws,
which weighs the top 7% of the lengths."""


@dataclass(frozen=True)
class SampleLengths:
    """Tokens per example of a data set, as the trainer tokenizes it, before any truncation."""

    count: int
    """Examples with tokens to learn from."""
    total: int
    """Their tokens, summed."""
    quantiles: tuple[int, ...]
    """The lengths at evenly spaced fractions 0, 1/(m-1), ..., 1 of the examples: the shortest
    first, the longest last."""

    def __post_init__(self) -> None:
        q = self.quantiles
        if self.count < 1 or self.total < self.count or len(q) < 2:
            raise PlannerError("sample lengths need at least one example of at least one token", "data")
        if q[0] < 1 or any(b < a for a, b in zip(q, q[1:])):
            raise PlannerError("sample length quantiles must be positive and in increasing order", "data")

    @classmethod
    def of(cls, lengths: Sequence[int], points: int = QUANTILE_POINTS) -> SampleLengths:
        """The summary of ``lengths`` (each example's tokens), quantiles by the nearest rank."""
        ordered = sorted(lengths)
        if not ordered:
            raise PlannerError("the data set has no example with tokens to learn from", "data")
        last = len(ordered) - 1
        quantiles = tuple(ordered[round(i * last / (points - 1))] for i in range(points))
        return cls(len(ordered), sum(ordered), quantiles)

    @property
    def longest(self) -> int:
        return self.quantiles[-1]

    def mean(self, cap: int) -> float:
        """Mean tokens per example once cut to ``cap`` (the trainer truncates at max_seq_len)."""
        if cap >= self.longest:
            return self.total / self.count
        return self.padded(1, cap)

    def padded(self, batch: int, cap: int) -> float:
        """Expected length of a shuffled micro-batch of ``batch`` examples cut to ``cap``: the
        longest of them (order statistics, in the module's docstring), integrated over the
        quantiles by the trapezoid rule; remembered, as a recommendation asks for each option."""
        if (batch, cap) not in self._padded:
            self._padded[batch, cap] = self._integral(batch, cap)
        return self._padded[batch, cap]

    @functools.cached_property
    def _padded(self) -> dict[tuple[int, int], float]:
        return {}

    def _integral(self, batch: int, cap: int) -> float:
        q = [min(x, cap) for x in self.quantiles]
        step = 1 / (len(q) - 1)
        weights = [(i * step) ** batch for i in range(len(q))]
        return sum((q[i] + q[i + 1]) / 2 * (weights[i + 1] - weights[i]) for i in range(len(q) - 1))

    def tokens(self, cap: int) -> int:
        """Tokens the data set trains on once cut to ``cap``: one epoch's."""
        return round(self.mean(cap) * self.count)

