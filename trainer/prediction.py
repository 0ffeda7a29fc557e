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
from trainer.config import TrainConfig


def planner_setup(cfg: TrainConfig, precision: str) -> TrainSetup:
    return TrainSetup(
        method=cfg.method,
        quant=cfg.quant if cfg.method == "qlora" else None,
        double_quant=cfg.double_quant,
        precision=precision,
        adapter_dtype=cfg.adapter_dtype,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size,
        seq_len=cfg.max_seq_len,
        grad_checkpointing=cfg.grad_checkpointing,
        attention=cfg.attention,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=min(cfg.lora_dropout, 0.99),
        lora_targets=cfg.lora_targets,
        modules_to_save=cfg.modules_to_save,
        num_gpus=cfg.num_processes,
        sharding="none" if cfg.num_processes == 1 else cfg.sharding,
    )


def predict(cfg: TrainConfig, precision: str) -> tuple[ModelSpec, TrainSetup, Estimate] | None:
    """The planner's estimate for this run, or None when the planner cannot model it."""
    try:
        spec = resolve_model(cfg.model)
        setup = planner_setup(cfg, precision)
        return spec, setup, estimate(spec, setup)
    except PlannerError:
        return None


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
    s = fix.setup
    changes = {
        "grad_checkpointing": s.grad_checkpointing,
        "batch_size": s.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps * fix.accumulation_factor,
        "optimizer": s.optimizer,
        "method": s.method,
        "max_seq_len": s.seq_len,
    }
    changes = {k: v for k, v in changes.items() if getattr(cfg, k) != v}
    return fix.change, changes


def apply_fix(cfg: TrainConfig, changes: dict) -> TrainConfig:
    """The config the app restarts with after "Apply and restart"."""
    return replace(cfg, **changes)
