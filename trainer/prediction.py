"""What the planner predicts for this exact run, and its computed fix after an out-of-memory.

The trainer asks the planner (pure Python, no torch) so that the app can chart measured memory
against the same prediction the Plan page showed.
"""

from __future__ import annotations

from dataclasses import replace

from planner.catalog import ModelSpec, resolve_model
from planner.errors import PlannerError
from planner.fit import Fix, nearest_fit
from planner.memory import Estimate, estimate
from planner.options import TrainSetup
from planner.samples import SampleLengths
from trainer.config import TrainConfig, fields_of, setup_of


def predict(cfg: TrainConfig, precision: str, device: str = "cuda",
            lengths: SampleLengths | None = None) -> tuple[ModelSpec, TrainSetup, Estimate] | None:
    """The planner's estimate for this run on ``device`` (a CPU run: its live tensor bytes), or
    None when the planner cannot model it. ``lengths``: the run's own examples (unpacked), whose
    longest is the longest micro-batch, as the Plan page planned it with the same data."""
    try:
        spec = resolve_model(cfg.model)
        setup = replace(setup_of(cfg, precision), lengths=lengths)
        return spec, setup, estimate(spec, setup, device)
    except PlannerError:
        return None


def predicted_at(cfg: TrainConfig, precision: str, device: str, shape: tuple[int, int] | None,
                 planned: int | None) -> int | None:
    """The prediction for the micro-batch in flight at the measured peak (rows x padded length):
    without packing a batch is padded only to its longest sample, so it can use less than the
    plan (``planned``, at max_seq_len), which stands when the shape is unknown or the same."""
    if shape is None or shape == (cfg.batch_size, cfg.max_seq_len):
        return planned
    at_shape = predict(replace(cfg, batch_size=shape[0], max_seq_len=shape[1]), precision, device)
    return at_shape[2].peak_allocated_bytes if at_shape else None


def oom_hint(cfg: TrainConfig, precision: str, budget_bytes: int) -> tuple[str, dict | None]:
    """(hint in words, the config fields to change) for the nearest configuration that fits."""
    predicted = predict(cfg, precision)
    if predicted is None:
        return ("the planner cannot model this model; try a smaller batch_size or max_seq_len, "
                "grad_checkpointing, or method qlora", None)
    spec, setup, _ = predicted
    fix: Fix | None = nearest_fit(spec, setup, budget_bytes)
    if fix is None:
        return ("nothing fits on this device even with QLoRA, micro-batch 1 and 256 tokens: "
                "use a bigger GPU or more GPUs", None)
    # the fields the fix changes, through the one mapping (precision as resolved, on both sides)
    before, after = fields_of(setup), fields_of(fix.setup)
    return fix.change, {k: v for k, v in after.items() if before[k] != v}
