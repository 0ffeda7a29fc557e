"""The memory-bound traffic of a step (planner/traffic.py), by hand for Llama-2-7B, and what the
kernels, adapters and experts change."""

from dataclasses import replace

import pytest

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost
from planner.options import TrainSetup
from planner.traffic import traffic_per_token

# Llama-2-7b: h 4096, 32 layers, 32 heads x 128 (MHA), ffn 11008, vocab 32000, RMSNorm, SwiGLU
H, L, FF, V = 4096, 32, 11008, 32000
LINEARS = [(H, H)] * 4 + [(H, FF), (H, FF), (FF, H)]  # q k v o gate up down (d_in, d_out)
D_IN, D_OUT = sum(i for i, _ in LINEARS), sum(o for _, o in LINEARS)
LLAMA2 = resolve_model("meta-llama/Llama-2-7b-hf").arch


def test_eager_bf16_lora_by_hand():
    """bf16 weights under autocast, fp32 adapters on every linear, checkpointing: each layer's
    kernels run forward, backward (twice the bytes) and again in the recompute: 4 passes."""
    t = traffic_per_token(LLAMA2, TrainSetup(method="lora", precision="bf16", grad_checkpointing=True))
    passes = 4
    # RMSNorm: x.float() (2 + 4), pow (4 + 4), mean (4), * rsqrt (4 + 4), .to(bf16) (4 + 2), * weight (2 + 2)
    assert t.norms == L * passes * 2 * H * 36
    assert t.rope == L * passes * (H + H) * 20  # q and k: ten 2-byte passes
    assert t.attention_copy == L * passes * H * 4
    assert t.activation == L * passes * FF * 10  # silu (2 + 2), gate * up (4 + 2)
    assert t.residual == L * passes * 2 * H * 6  # read two, write one
    assert t.experts == 0
    # peft casts the input to fp32 (2 + 4), autocast back to bf16 for lora_A (4 + 2); A reads it (2),
    # B writes its output (2), scaled (2 + 2) and added to the base output (4 + 2)
    assert t.adapters == L * passes * (D_IN * (12 + 2) + D_OUT * (2 + 4 + 6))
    # the loss: logits.float() (2 + 4), log-softmax's max, sum and output (3 x 4), forward and backward
    assert t.loss == 3 * V * 18
    assert t.total == pytest.approx(t.norms + t.rope + t.attention_copy + t.activation + t.residual + t.adapters
                                    + t.loss)


def test_dropout_and_bf16_adapters_change_only_the_adapters():
    base = TrainSetup(method="lora", precision="bf16", grad_checkpointing=False)
    plain = traffic_per_token(LLAMA2, base)
    dropout = traffic_per_token(LLAMA2, replace(base, lora_dropout=0.1))
    bf16 = traffic_per_token(LLAMA2, replace(base, adapter_dtype="bf16"))
    assert replace(dropout, adapters=0) == replace(plain, adapters=0) == replace(bf16, adapters=0)
    # dropout reads the fp32 input, writes it and a 1-byte mask; bf16 adapters need no casts
    assert dropout.adapters - plain.adapters == L * 3 * D_IN * 9
    assert plain.adapters - bf16.adapters == L * 3 * D_IN * 12


def test_full_fine_tuning_has_no_adapter_traffic():
    t = traffic_per_token(LLAMA2, TrainSetup(method="full", precision="bf16", grad_checkpointing=False))
    assert t.adapters == 0 and t.norms == L * 3 * 2 * H * 36


def test_compile_fuses_each_chain_into_one_pass():
    eager = traffic_per_token(LLAMA2, TrainSetup(method="lora", grad_checkpointing=False))
    compiled = traffic_per_token(LLAMA2, TrainSetup(method="lora", grad_checkpointing=False, kernels="compile"))
    assert compiled.norms == L * 3 * 2 * H * 4  # the input read, the output written
    assert compiled.rope == L * 3 * (H + H) * 4
    assert compiled.activation == L * 3 * FF * 6  # gate and up read, the product written
    assert compiled.adapters == L * 3 * (D_IN * (4 + 2) + D_OUT * (2 + 6))
    assert compiled.loss == 3 * V * 4
    assert compiled.total < 0.5 * eager.total


def test_unsloth_adds_the_adapters_in_place():
    setup = TrainSetup(method="lora", grad_checkpointing=False, kernels="unsloth", adapter_dtype="bf16")
    assert traffic_per_token(LLAMA2, setup).adapters == L * 3 * (D_IN * 2 + D_OUT * (2 + 4))


def test_an_expert_adapter_runs_for_the_routed_tokens_only():
    """Mixtral routes each token through 2 of its 8 experts: their adapters run twice per token,
    not eight times; the experts' gathers and weighted scatters move 6 x 2 bytes a hidden element."""
    mixtral = resolve_model("mistralai/Mixtral-8x7B-v0.1").arch
    setup = TrainSetup(method="lora", grad_checkpointing=False, adapter_dtype="bf16")
    t = traffic_per_token(mixtral, setup)
    h, ff, layers = 4096, 14336, 32
    attention = [(h, h), (h, 1024), (h, 1024), (h, h)]
    expert = [(h, ff), (ff, h), (h, ff)]
    per_linear = sum(2 * i + 12 * o for i, o in attention) + 2 * sum(2 * i + 12 * o for i, o in expert)
    assert t.adapters == layers * 3 * per_linear
    assert t.experts == layers * 3 * 12 * h * 2


def test_traffic_is_timed_over_bandwidth_in_the_step():
    g = find_gpu("A100 80GB SXM")
    setup = TrainSetup(method="lora", batch_size=2, seq_len=1024, gradient_accumulation_steps=2)
    c = run_cost(LLAMA2, setup, g)
    assert c.step.traffic == pytest.approx(2 * 2048 * traffic_per_token(LLAMA2, setup).total / g.bandwidth_bytes_per_s)


def test_lora_is_faster_than_full_fine_tuning_once_its_passes_are_counted():
    """Issue 19 point 4: published runs on the same stacks measure LoRA 1.09-1.15x faster than
    full fine-tuning on datacenter GPUs. LoRA saves the weight gradients (a third of the FLOPs)
    but pays its adapters' memory-bound passes."""
    llama8 = resolve_model("meta-llama/Llama-3.1-8B").arch
    g = find_gpu("A100 80GB SXM")
    for kernels in ("eager", "compile"):
        full, lora = (run_cost(llama8, TrainSetup(method=m, batch_size=4, kernels=kernels), g).tokens_per_second
                      for m in ("full", "lora"))
        assert 1.0 < lora / full < 1.25


def test_dora_scales_both_outputs_by_the_magnitude():
    """peft's DoRA adds (m - 1) * base + m * product * scaling to the base output: 12 passes of 2
    bytes per output element where LoRA's scaling and add take 5."""
    base = TrainSetup(method="lora", grad_checkpointing=False, adapter_dtype="bf16")
    lora, dora = (traffic_per_token(LLAMA2, replace(base, use_dora=d)).adapters for d in (False, True))
    assert dora - lora == L * 3 * D_OUT * 14


def test_qloras_fp32_residual_is_cast_at_every_4bit_linear():
    """prepare_model_for_kbit_training upcasts the norms and embeddings: the residual stream is fp32,
    and bitsandbytes' Linear4bit casts each input to bf16 and its output back to fp32, so RoPE and
    the MLP's activation run in fp32 too. Sharded, or compiled, nothing is cast."""
    q = TrainSetup(method="qlora", grad_checkpointing=False)
    t = traffic_per_token(LLAMA2, q)
    assert t.casts == L * 3 * sum((4 + 2) * (i + o) for i, o in LINEARS)
    assert t.rope == L * 3 * (H + H) * 40 and t.activation == L * 3 * FF * 20
    assert traffic_per_token(LLAMA2, replace(q, kbit_prepare=False)).casts == 0
    assert traffic_per_token(LLAMA2, replace(q, kernels="compile")).casts == 0
    assert traffic_per_token(LLAMA2, TrainSetup(method="lora", grad_checkpointing=False)).casts == 0
