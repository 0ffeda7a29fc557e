"""planner/fused_kernels.py: Unsloth's fused LoRA kernels in the activation model (--kernels unsloth)."""

from dataclasses import replace

import pytest

from planner.catalog import resolve_model
from planner.fused_kernels import fused, unsloth_layer
from planner.memory import estimate
from planner.options import TrainSetup
from planner.stacks import load_stack

UNSLOTH = TrainSetup(method="lora", precision="bf16", kernels="unsloth", grad_checkpointing=False)


def test_a_llama_layer_keeps_what_the_kernels_save_by_hand():
    """Llama-3.1-8B (h 4096, 32 query and 8 key/value heads of 128, MLP 14,336), bf16, per token:
    both norms' inputs and 1/rms, both normed inputs (LoRA_QKV's and LoRA_MLP's X), Q, K, V and
    the attention output with its log-sum-exp per head, SDPA's reshaped copy for o_proj, and the
    gate and up outputs."""
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    layer = unsloth_layer(arch, arch.blocks[0], UNSLOTH, residual=2)
    norms, normed = 2 * (2 * 4096 + 4), 2 * 2 * 4096
    attention = 2 * (4096 + 2 * 1024 + 4096) + 4 * 32 + 2 * 4096
    mlp = 2 * 2 * 14336
    assert layer.saved == norms + normed + attention + mlp
    assert layer.backward == 2 * 4096 + 2 * 14336  # the incoming gradient, the down projection's input's
    flash = unsloth_layer(arch, arch.blocks[0], replace(UNSLOTH, attention="flash_attention_2"), residual=2)
    assert layer.saved - flash.saved == 2 * 4096  # flash writes (batch, tokens, heads, dim): o_proj reads a view


@pytest.mark.parametrize("change", [dict(method="full"), dict(use_dora=True), dict(lora_dropout=0.1),
                                    dict(peft="ia3"), dict(kernels="eager")])
def test_the_kernels_run_only_for_plain_lora_without_dropout(change):
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    assert fused(arch.blocks[0], UNSLOTH)
    assert not fused(arch.blocks[0], replace(UNSLOTH, **change))


def test_moe_layers_run_peft_modules():
    arch = resolve_model("mistralai/Mixtral-8x7B-v0.1").arch
    assert not any(fused(b, UNSLOTH) for b in arch.blocks)


def test_the_kernels_keep_less_than_peft_and_the_estimate_says_which_ran():
    model = resolve_model("meta-llama/Llama-3.1-8B")
    eager, unsloth = (estimate(model, replace(UNSLOTH, kernels=k)) for k in ("eager", "unsloth"))
    # peft's fp32 adapters copy every adapted input to fp32; Unsloth's kernels multiply the bf16 inputs
    assert unsloth.breakdown.activations < 0.6 * eager.breakdown.activations
    assert any("Unsloth's fused LoRA kernels" in a for a in unsloth.assumptions)
    assert any(a.startswith("eager PyTorch") for a in eager.assumptions)


def test_the_unsloth_preset_plans_its_kernels_and_a_user_can_plan_without():
    stack = load_stack("unsloth")
    assert stack.apply(TrainSetup(method="qlora")).kernels == "unsloth"
    mine = TrainSetup(method="qlora", kernels="eager", explicit=frozenset({"kernels"}))
    assert stack.apply(mine).kernels == "eager"
    assert "fast_lora.py" in stack.knobs("qlora")["kernels"].source
