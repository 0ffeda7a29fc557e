"""From a plan to a run: whether the app's trainer can run a planned setup, and the run config it
would start from. One place for both, used by "Use this plan", each alternative's "Use" and the
recommender's notes, so nothing on screen offers a run the trainer would silently change.

Qt-free and torch-free; the trainer's choices come from its contract module ``trainer.config``.
"""

from __future__ import annotations

from typing import Any

from planner.options import TrainSetup
from trainer.config import SHARDINGS as TRAINER_SHARDINGS

SHARDING_AS_RUN = {"none": "ddp", "ddp": "ddp", "fsdp": "fsdp", "zero3": "fsdp"}
"""How the trainer runs a planned sharding. ZeRO-3 and FSDP's full shard keep the same state per
GPU (parameters, gradients and optimizer state all sharded), so a zero3 plan runs as FSDP; ZeRO-2
(sharded optimizer and gradients, whole parameters) has no counterpart in the trainer."""


def why_not_trainable(setup: TrainSetup) -> str | None:
    """Why the app's trainer cannot run ``setup`` as planned (one line), or None when it can."""
    if setup.offload != "none":
        return f"the trainer has no CPU offload (planned: offload {setup.offload}); plan without offload to train here"
    if setup.sharding not in SHARDING_AS_RUN:
        return (f"the trainer shards with {' or '.join(TRAINER_SHARDINGS)} only (planned: {setup.sharding}); "
                "plan with fsdp or ddp to train here")
    if setup.method == "qlora" and setup.quant == "2bit":
        return "the trainer quantizes with bitsandbytes (nf4, fp4, int8); 2-bit is an estimate only"
    if setup.method == "qlora" and not setup.kbit_prepare:
        return "the trainer always runs prepare_model_for_kbit_training for QLoRA"
    return None


def accumulation_for(planned_batch: int, micro_batch: int) -> int:
    """Gradient accumulation that keeps the planned batch when a plan runs a smaller micro-batch
    (a larger one already covers it)."""
    return max(1, planned_batch // micro_batch)


def train_config_fields(setup: TrainSetup, model: str, epochs: float,
                        gradient_accumulation_steps: int = 1) -> dict[str, Any]:
    """The TrainConfig fields a planned setup starts the Train page from (the page adds the data
    and the run directory). Call only when :func:`why_not_trainable` says None."""
    problem = why_not_trainable(setup)
    if problem:
        raise ValueError(problem)
    s = setup
    return {
        "model": model, "method": s.method, "quant": s.quant or "nf4", "double_quant": s.double_quant,
        "precision": s.precision, "adapter_dtype": s.adapter_dtype, "optimizer": s.optimizer,
        "batch_size": s.batch_size, "gradient_accumulation_steps": gradient_accumulation_steps,
        "max_seq_len": s.seq_len, "grad_checkpointing": s.grad_checkpointing,
        "attention": s.attention, "lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": s.lora_dropout,
        "lora_targets": list(s.lora_targets), "modules_to_save": list(s.modules_to_save), "epochs": epochs,
        "num_processes": s.num_gpus, "sharding": SHARDING_AS_RUN[s.sharding],
    }
