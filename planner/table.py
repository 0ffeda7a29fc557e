"""The classic "memory by method and model size" table, computed instead of copied.

Rows and columns are those of the table every fine-tuning guide quotes (LLaMA-Factory's
README): sizes 7B..8x22B by Full AMP / Full 16 / LoRA 16 / QLoRA 8 / QLoRA 4 / QLoRA 2.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from planner.catalog import resolve_model
from planner.memory import MOE_FUSED, MOE_PER_EXPERT, Estimate, estimate
from planner.options import TrainSetup
from planner.stacks import planned

COLUMNS = (
    ("7B", "meta-llama/Llama-2-7b-hf"),
    ("13B", "meta-llama/Llama-2-13b-hf"),
    ("30B", "huggyllama/llama-30b"),
    ("70B", "meta-llama/Llama-2-70b-hf"),
    ("110B", "Qwen/Qwen1.5-110B"),
    ("8x7B", "mistralai/Mixtral-8x7B-v0.1"),
    ("8x22B", "mistralai/Mixtral-8x22B-v0.1"),
)

# (method label, bits label, the fields that define the row)
ROWS = (
    ("Full", "AMP", dict(method="full", quant=None, precision="bf16-mixed")),
    ("Full", "16", dict(method="full", quant=None, precision="bf16")),
    ("LoRA", "16", dict(method="lora", quant=None, precision="bf16")),
    ("QLoRA", "8", dict(method="qlora", quant="int8", precision="bf16")),
    ("QLoRA", "4", dict(method="qlora", quant="nf4", precision="bf16")),
    ("QLoRA", "2", dict(method="qlora", quant="2bit", precision="bf16")),
    # the other adapters, on the same 16-bit base as LoRA 16
    ("DoRA", "16", dict(method="lora", quant=None, precision="bf16", use_dora=True)),
    ("AdaLoRA", "16", dict(method="lora", quant=None, precision="bf16", peft="adalora")),
    ("IA3", "16", dict(method="lora", quant=None, precision="bf16", peft="ia3")),
    ("Prompt", "16", dict(method="lora", quant=None, precision="bf16", peft="prompt")),
    # (prefix tuning trains without checkpointing: planner.stacks.planned turns it off)
    ("Prefix", "16", dict(method="lora", quant=None, precision="bf16", peft="prefix")),
)

ADAPTER_NOTE = ("DoRA, AdaLoRA, IA3, prompt and prefix tuning rows hold a 16-bit base; each also trains on a "
                "4-bit one (bitsandbytes), which saves what QLoRA 4 saves against LoRA 16 (DoRA on 4 bits is "
                "estimated, not simulated). Prefix tuning runs without gradient checkpointing (transformers 5 "
                "drops its keys inside checkpointed layers).")
"""What the adapter rows assume, said under every rendering of the table."""


MOE_LAYOUT = f"Full rows train {MOE_FUSED}; LoRA and QLoRA rows hold {MOE_PER_EXPERT}"
"""The layout the MoE columns assume (their estimates' assumptions say the same per row)."""


@functools.cache
def moe_columns() -> tuple[str, ...]:
    """The sizes whose model is a mixture of experts (they assume ``MOE_LAYOUT``)."""
    return tuple(size for size, model_id in COLUMNS if resolve_model(model_id).arch.is_moe)


@dataclass(frozen=True)
class TableRow:
    method: str
    bits: str
    estimates: tuple[Estimate, ...]


def _row_setup(base: TrainSetup, fields: dict[str, Any]) -> TrainSetup:
    # modules_to_save only means something for adapter methods, the optimizer step in backward
    # only for full fine-tuning; the stack's recipe for the row's method supplies the rest
    extra: dict[str, Any] = {"modules_to_save": ()} if fields["method"] == "full" else {"optimizer_in_backward": False}
    # each row names its adapter: LoRA unless it says otherwise
    adapter = {"peft": "lora", "use_dora": False}
    if fields.get("peft") in ("prompt", "prefix"):
        adapter["modules_to_save"] = ()
    return planned(base, **{**adapter, **extra, **fields})


def classic_table(base: TrainSetup) -> tuple[TableRow, ...]:
    """Every row x column of the classic table, with ``base`` supplying batch, sequence, etc."""
    models = [resolve_model(model_id) for _, model_id in COLUMNS]
    rows = []
    for method, bits, fields in ROWS:
        setup = _row_setup(base, fields)
        rows.append(TableRow(method, bits, tuple(estimate(m, setup) for m in models)))
    return tuple(rows)
