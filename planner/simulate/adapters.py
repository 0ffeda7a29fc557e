"""The peft configuration of a plan's adapter: one builder for precise mode and the trainer, so
what is simulated is what trains."""

from __future__ import annotations

import math
from typing import Any

from planner.adapted import feedforward_names
from planner.options import TrainSetup

ADALORA_SCHEDULE = (0.1, 0.3, 10)
"""AdaLoRA's budget schedule as (warm-up share of the steps at full rank, final share at the
target rank, steps between rank updates): the paper's t_i warm-up and t_f final fine-tuning,
with the pruning in between (Zhang et al. 2023, section 3.3)."""


def adalora_steps(total_steps: int) -> dict[str, int]:
    """``tinit``, ``tfinal`` and ``deltaT`` for a run of ``total_steps`` optimizer steps."""
    warm, final, every = ADALORA_SCHEDULE
    total = max(total_steps, 3)
    tinit, tfinal = max(1, math.floor(warm * total)), max(1, math.floor(final * total))
    return {"total_step": total, "tinit": tinit, "tfinal": min(tfinal, total - tinit - 1), "deltaT": every}


def peft_config(setup: TrainSetup, total_steps: int = 1000) -> Any:
    """The peft config that trains ``setup``'s adapter (``setup.peft``) for ``total_steps``."""
    from peft import AdaLoraConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig

    targets: str | list[str] = "all-linear" if "all-linear" in setup.lora_targets else list(setup.lora_targets)
    saved = list(setup.modules_to_save) or None
    if setup.peft == "prompt":
        return PromptTuningConfig(num_virtual_tokens=setup.virtual_tokens, task_type="CAUSAL_LM")
    if setup.peft == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=setup.virtual_tokens, task_type="CAUSAL_LM")
    if setup.peft == "ia3":
        # peft's defaults per model type are the paper's (keys, values, the MLP's down projection)
        named = None if targets == "all-linear" else list(setup.lora_targets)
        return IA3Config(target_modules=named, feedforward_modules=named and feedforward_names(named),
                         modules_to_save=saved, task_type="CAUSAL_LM")
    if setup.peft == "adalora":
        return AdaLoraConfig(init_r=setup.adapter_rank, target_r=setup.lora_r, lora_alpha=setup.lora_alpha,
                             lora_dropout=setup.lora_dropout, target_modules=targets, modules_to_save=saved,
                             task_type="CAUSAL_LM", **adalora_steps(total_steps))
    return LoraConfig(r=setup.lora_r, lora_alpha=setup.lora_alpha, lora_dropout=setup.lora_dropout,
                      target_modules=targets, use_dora=setup.use_dora, modules_to_save=saved, task_type="CAUSAL_LM")


def freeze_rank_counts(model: Any) -> None:
    """peft 0.21 casts AdaLoRA's adapters to fp32 (``autocast_adapter_dtype``) by replacing each
    ParameterDict entry, which turns its ``ranknum`` (the rank count the output is divided by) into
    a trainable parameter: AdamW would move it, and backward keep what it divides. Frozen again
    here, as peft creates it (tests/trainer/test_peft_methods.py pins the peft version)."""
    for name, param in model.named_parameters():
        if name.endswith(tuple(f"ranknum.{adapter}" for adapter in getattr(model, "peft_config", {}))):
            param.requires_grad_(False)
