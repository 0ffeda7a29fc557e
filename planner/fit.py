"""The computed out-of-memory fix: the nearest configuration the estimator says fits.

Candidates are tried from the least to the most disruptive change, and the first whose
predicted device memory fits the budget wins:

1. gradient checkpointing on (costs ~30% speed, nothing else);
2. a smaller micro-batch with proportionally more gradient accumulation (same global batch);
3. an 8-bit optimizer state;
4. QLoRA (4-bit base) instead of LoRA or full fine-tuning;
5. a shorter sequence (changes what the model sees: last).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from planner.catalog import ModelSpec
from planner.memory import Estimate, estimate
from planner.options import TrainSetup, at_micro_batch
from planner.units import GiB


@dataclass(frozen=True)
class Fix:
    setup: TrainSetup
    estimate: Estimate
    accumulation_factor: int
    """How many times the micro-batch shrank (``setup`` accumulates that much more)."""
    change: str
    """The change in words, with the predicted memory against the budget."""


def _candidates(s: TrainSetup) -> Iterator[tuple[TrainSetup, int, str]]:
    base, also = s, ""
    if not s.grad_checkpointing and not s.peft == "prefix":  # prefix tuning trains without it
        base, also = replace(s, grad_checkpointing=True), "gradient checkpointing on and "
        yield base, 1, "turn gradient checkpointing on"
    batch, factor = base.batch_size, 1
    while batch > 1:
        batch, factor = batch // 2, factor * 2
        yield (at_micro_batch(base, batch), factor,
               f"{also}micro-batch {s.batch_size} -> {batch} with gradient accumulation x{factor} "
               "(same global batch)")
    small = at_micro_batch(base, batch)
    if small.optimizer in ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"):
        small = replace(small, optimizer="paged_adamw_8bit")
        yield small, factor, "micro-batch 1 and the paged 8-bit AdamW optimizer"
    if small.method != "qlora":
        small = replace(small, method="qlora", quant="nf4", modules_to_save=())
        yield small, factor, "QLoRA (4-bit NF4 base) with micro-batch 1"
    seq = small.seq_len
    while seq > 256:
        seq //= 2
        yield replace(small, seq_len=seq), factor, f"sequence length {s.seq_len} -> {seq} (with all of the above)"


def nearest_fit(model: ModelSpec, setup: TrainSetup, budget_bytes: int) -> Fix | None:
    """The first candidate whose predicted device memory fits ``budget_bytes``, or None."""
    for candidate, factor, change in _candidates(setup):
        est = estimate(model, candidate)
        if est.device_used_bytes <= budget_bytes:
            words = (f"{change}: predicted {est.device_used_bytes / GiB:.1f} GiB of "
                     f"{budget_bytes / GiB:.1f} GiB")
            return Fix(candidate, est, factor, words)
    return None
