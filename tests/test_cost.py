"""planner/cost.py: FLOPs per token, throughput, time, energy and dollars, checked by hand.

The hand figures come from the published configs (hidden size, layers, widths), not from the
code's own Architecture, so a wrong parameter count in the catalog shows up here too.

FLOPs per token (Kaplan et al. 2020; Narayanan et al. 2021):
    full FT    6N + attention          (+ 2N + attention_fwd under gradient checkpointing)
    (Q)LoRA    4N + attention + 6 r (d_in + d_out) per targeted module and layer
               (+ 2N + attention_fwd + 2 r (d_in + d_out) ... under checkpointing)
    N          every matmul weight a token passes through: decoder Linears (top_k experts of
               an MoE layer) and the LM head; not the embedding lookup.
    attention  causal QK^T and AV: 2 * layers * seq * n_heads * head_dim per forward token,
               x3 for forward + backward.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.calibration import HOST_SECONDS_PER_STEP
from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu, gpu_catalog
from planner.cost import active_matmul_params, flops_per_token, run_cost
from planner.options import TrainSetup
from planner.traffic import traffic_per_token

LLAMA2_7B = "meta-llama/Llama-2-7b-hf"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
QWEN_05B = "Qwen/Qwen2.5-0.5B"

# --- Llama-2-7b by hand: h 4096, 32 layers, 32 heads x 128, MHA, ffn 11008, vocab 32000, untied.
H, L, FF, V = 4096, 32, 11008, 32000
LLAMA_LINEARS = [(H, H)] * 4 + [(H, FF), (H, FF), (FF, H)]  # q k v o gate up down (d_in, d_out)
LLAMA_DECODER = L * sum(i * o for i, o in LLAMA_LINEARS)  # 6,476,005,376: what QLoRA quantizes
LLAMA_N = LLAMA_DECODER + V * H  # + LM head = 6,607,077,376


def attention_fwd(layers: int, seq: int, heads: int, head_dim: int) -> float:
    """Causal QK^T + AV per forward token: 2 matmuls x 2 s d FLOPs, halved by the mask."""
    return 2 * 2 * layers * seq * heads * head_dim / 2


def model(name: str):
    return resolve_model(name)


def gpu(name: str):
    return find_gpu(name)


# ------------------------------------------------------------------ parameters a token multiplies


def test_llama2_7b_active_params_by_hand():
    assert LLAMA_N == 6_607_077_376
    n, routed = active_matmul_params(model(LLAMA2_7B).arch)
    assert n == LLAMA_N
    assert routed == 0


def test_tied_lm_head_is_still_a_matmul():
    # Qwen2.5-0.5B ties embeddings to the LM head: stored once, but each token still multiplies
    # through vocab x hidden in the head. h 896, 24 layers, 14 q heads / 2 kv heads of 64, ffn 4864.
    h, layers, ff, vocab, kv = 896, 24, 4864, 151936, 2 * 64
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * ff
    expected = layers * per_layer + vocab * h
    assert expected == 493_961_216
    n, _ = active_matmul_params(model(QWEN_05B).arch)
    assert n == expected
    assert n < model(QWEN_05B).total_params  # the embedding lookup is excluded


def test_mixtral_active_params_count_top_k_experts():
    # Mixtral-8x7B: h 4096, 32 layers, q 32x128, kv 8x128, 8 experts of ffn 14336, top-2, router 4096x8.
    h, layers, ff, vocab = 4096, 32, 14336, 32000
    attn = 2 * h * h + 2 * h * 1024
    router = h * 8
    expert = 3 * h * ff
    routed = layers * 2 * expert
    expected = layers * (attn + router) + routed + vocab * h
    spec = model(MIXTRAL)
    n, routed_got = active_matmul_params(spec.arch)
    assert n == expected == 12_748_587_008
    assert routed_got == routed
    # Mistral's "12.9B active of 46.7B" counts the embedding table too
    assert (n + vocab * h) / 1e9 == pytest.approx(12.9, abs=0.05)
    assert spec.total_params / 1e9 == pytest.approx(46.7, abs=0.05)
    # all 8 experts are stored (and quantized), only 2 run per token; the router stays unquantized
    assert spec.arch.linear_weight_params == layers * (attn + 8 * expert)


# ------------------------------------------------------------------ FLOPs per token


@pytest.mark.parametrize("seq", [512, 2048, 8192])
def test_full_ft_flops_without_checkpointing_is_6n_plus_attention(seq):
    setup = TrainSetup(method="full", grad_checkpointing=False, seq_len=seq)
    f = flops_per_token(model(LLAMA2_7B).arch, setup)
    attn = attention_fwd(L, seq, 32, 128)
    assert f.forward == 2 * LLAMA_N
    assert f.backward_activations == 2 * LLAMA_N
    assert f.weight_gradients == 2 * LLAMA_N
    assert f.attention == pytest.approx(3 * attn)
    assert f.recompute == 0
    assert f.adapters == 0
    assert f.total == pytest.approx(6 * LLAMA_N + 3 * attn, rel=1e-12)


def test_full_ft_checkpointing_adds_one_forward_of_the_layers():
    arch = model(LLAMA2_7B).arch
    off = flops_per_token(arch, TrainSetup(method="full", grad_checkpointing=False))
    on = flops_per_token(arch, TrainSetup(method="full", grad_checkpointing=True))
    one_forward = 2 * LLAMA_DECODER + attention_fwd(L, 2048, 32, 128)  # the LM head is not recomputed
    assert on.recompute == pytest.approx(one_forward)
    assert on.total - off.total == pytest.approx(one_forward)
    assert on.total == pytest.approx(6 * LLAMA_N + 2 * LLAMA_DECODER + 4 * attention_fwd(L, 2048, 32, 128))


def test_kaplan_6n_dominates_at_short_sequences():
    # the attention term is small next to 6N for a 7B at 2k tokens (~8%)
    f = flops_per_token(model(LLAMA2_7B).arch, TrainSetup(method="full", grad_checkpointing=False))
    assert 6 * LLAMA_N < f.total < 1.1 * 6 * LLAMA_N


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_all_linear_flops_by_hand(method):
    r = 16
    setup = TrainSetup(method=method, lora_r=r, grad_checkpointing=False)
    f = flops_per_token(model(LLAMA2_7B).arch, setup)
    adapters = L * sum(6 * r * (i + o) for i, o in LLAMA_LINEARS)
    assert adapters == 239_861_760
    assert f.weight_gradients == 0  # frozen base: no weight gradients
    assert f.forward == f.backward_activations == 2 * LLAMA_N
    assert f.adapters == adapters
    assert f.total == pytest.approx(4 * LLAMA_N + 3 * attention_fwd(L, 2048, 32, 128) + adapters)


def test_lora_targets_and_rank_scale_adapter_flops():
    arch = model(LLAMA2_7B).arch
    for r in (8, 64):
        f = flops_per_token(arch, TrainSetup(lora_r=r, lora_targets=("q_proj", "v_proj")))
        assert f.adapters == L * 2 * 6 * r * (H + H)
    assert flops_per_token(arch, TrainSetup(lora_r=8, lora_targets=("down_proj",))).adapters == L * 6 * 8 * (FF + H)


def test_lora_checkpointing_recomputes_forward_and_adapter_forward():
    arch = model(LLAMA2_7B).arch
    r = 16
    off = flops_per_token(arch, TrainSetup(lora_r=r, grad_checkpointing=False))
    on = flops_per_token(arch, TrainSetup(lora_r=r, grad_checkpointing=True))
    adapter_fwd = L * sum(2 * r * (i + o) for i, o in LLAMA_LINEARS)
    assert on.total - off.total == pytest.approx(2 * LLAMA_DECODER + attention_fwd(L, 2048, 32, 128) + adapter_fwd)


def test_lora_is_about_two_thirds_of_full():
    arch = model(LLAMA2_7B).arch
    full = flops_per_token(arch, TrainSetup(method="full", grad_checkpointing=False)).total
    lora = flops_per_token(arch, TrainSetup(method="lora", grad_checkpointing=False)).total
    assert 0.66 < lora / full < 0.75


def test_moe_expert_adapters_run_for_top_k_experts():
    arch = model(MIXTRAL).arch
    r = 8
    # "w1" is each expert's gate projection in Mixtral's checkpoint (the router is "gate")
    f = flops_per_token(arch, TrainSetup(lora_r=r, lora_targets=("w1",)))
    assert f.adapters == 32 * 2 * 6 * r * (4096 + 14336)
    g = flops_per_token(arch, TrainSetup(lora_r=r, lora_targets=("q_proj",)))
    assert g.adapters == 32 * 6 * r * (4096 + 4096)


def test_moe_full_ft_flops_use_active_not_total_params():
    spec = model(MIXTRAL)
    f = flops_per_token(spec.arch, TrainSetup(method="full", grad_checkpointing=False))
    n, _ = active_matmul_params(spec.arch)
    assert f.forward == 2 * n
    assert f.total < 0.35 * 6 * spec.total_params  # ~12.7B active of 46.7B: ~27%, plus attention


# ------------------------------------------------------------------ QLoRA dequantization


def test_qlora_dequant_time_by_hand():
    g = gpu("RTX 4090")
    c = run_cost(model(LLAMA2_7B).arch, TrainSetup(method="qlora", quant="nf4", grad_checkpointing=True), g)
    # read 0.5 byte packed + write 2 bytes bf16 per quantized weight, per pass (fwd, bwd, recompute)
    assert c.dequant_seconds_per_step == pytest.approx(3 * LLAMA_DECODER * 2.5 / 1008e9, rel=1e-12)
    c8 = run_cost(model(LLAMA2_7B).arch, TrainSetup(method="qlora", quant="int8", grad_checkpointing=True), g)
    assert c8.dequant_seconds_per_step == pytest.approx(3 * LLAMA_DECODER * 3 / 1008e9, rel=1e-12)


def test_qlora_dequant_is_memory_bound():
    arch = model(LLAMA2_7B).arch
    setup = TrainSetup(method="qlora")
    g = gpu("A100 80GB SXM")
    base = run_cost(arch, setup, g).dequant_seconds_per_step
    assert base > 0
    assert run_cost(arch, setup, replace(g, bandwidth_bytes_per_s=2 * g.bandwidth_bytes_per_s)
                    ).dequant_seconds_per_step == pytest.approx(base / 2)
    assert run_cost(arch, setup, replace(g, bandwidth_bytes_per_s=g.bandwidth_bytes_per_s / 3)
                    ).dequant_seconds_per_step == pytest.approx(base * 3)
    # compute speed does not change a memory-bound term
    faster = run_cost(arch, setup, replace(g, bf16_flops=4 * g.bf16_flops))
    assert faster.dequant_seconds_per_step == pytest.approx(base)
    # nor does the micro-batch: weights are dequantized once per pass, whatever the tokens
    assert run_cost(arch, replace(setup, batch_size=8), g).dequant_seconds_per_step == pytest.approx(base)


def test_qlora_dequant_passes_three_with_checkpointing_two_without():
    arch = model(LLAMA2_7B).arch
    g = gpu("RTX 4090")
    on = run_cost(arch, TrainSetup(method="qlora", grad_checkpointing=True), g).dequant_seconds_per_step
    off = run_cost(arch, TrainSetup(method="qlora", grad_checkpointing=False), g).dequant_seconds_per_step
    assert on / off == pytest.approx(3 / 2)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_no_dequant_without_quantized_base(method):
    c = run_cost(model(LLAMA2_7B).arch, TrainSetup(method=method), gpu("RTX 4090"))
    assert c.dequant_seconds_per_step == 0


def test_throughput_by_hand():
    arch = model(LLAMA2_7B).arch
    g = gpu("RTX 4090")
    setup = TrainSetup(method="qlora", batch_size=2, seq_len=1024)
    c = run_cost(arch, setup, g)
    tokens = 2 * 1024
    # every GEMM is compute-bound at 2,048 tokens; LoRA's low-rank products are memory traffic
    f = c.flops_per_token
    assert f.recompute == pytest.approx(2 * LLAMA_DECODER + attention_fwd(L, 1024, 32, 128) + f.adapters / 3)
    compute = tokens * (f.total - 4 / 3 * f.adapters) / (g.peak_flops * c.utilization)  # recomputed too
    compute += tokens * traffic_per_token(arch, setup).total / g.bandwidth_bytes_per_s
    dequant = 3 * LLAMA_DECODER * 2.5 / g.bandwidth_bytes_per_s
    # once per optimizer step: torch's multi-tensor AdamW over the fp32 adapters (18 passes of 4 bytes
    # each), clipping (3 x 4)
    adapters = 32 * (4 * 16 * (4096 + 4096) + 3 * 16 * (4096 + 11008))
    update = adapters * (72 + 12) / g.bandwidth_bytes_per_s
    assert update < HOST_SECONDS_PER_STEP
    # the Trainer loop's own host step outlasts that update's kernels: the GPU waits for the rest
    loop = HOST_SECONDS_PER_STEP - update
    assert c.tokens_per_second == pytest.approx(tokens / (compute + dequant + update + loop), rel=1e-9)


# ------------------------------------------------------------------ achieved FLOP/s vs the peak

ALL_GPUS = sorted(gpu_catalog())


@pytest.mark.parametrize("name", ALL_GPUS)
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_achieved_flops_never_exceed_peak(name, method):
    g = gpu_catalog()[name]
    for ckpt in (True, False):
        for n, sharding in ((1, "none"), (4, "fsdp")):
            setup = TrainSetup(method=method, grad_checkpointing=ckpt, num_gpus=n, sharding=sharding)
            c = run_cost(model(LLAMA2_7B).arch, setup, g)
            assert 0 < c.utilization <= 1
            achieved = c.tokens_per_second * c.flops_per_token.total
            assert achieved <= g.peak_flops * n * (1 + 1e-9)


@pytest.mark.parametrize("name", ["T4", "V100 16GB"])
def test_gpus_without_bf16_use_the_fp16_peak(name):
    g = gpu_catalog()[name]
    assert not g.bf16
    assert g.peak_flops == g.fp16_flops


# ------------------------------------------------------------------ hours, energy, dollars


def test_hours_is_tokens_times_epochs_over_throughput():
    arch = model(LLAMA2_7B).arch
    c = run_cost(arch, TrainSetup(), gpu("RTX 4090"), dataset_tokens=50_000_000, epochs=3)
    assert c.hours == pytest.approx(50_000_000 * 3 / c.tokens_per_second / 3600, rel=1e-12)
    assert c.seconds == pytest.approx(c.hours * 3600)
    half = run_cost(arch, TrainSetup(), gpu("RTX 4090"), dataset_tokens=50_000_000, epochs=1.5)
    assert half.hours == pytest.approx(c.hours / 2)


def test_no_dataset_no_time_energy_or_cost():
    c = run_cost(model(LLAMA2_7B).arch, TrainSetup(), gpu("RTX 4090"), usd_per_hour=1.0, usd_per_kwh=0.3)
    assert c.tokens_per_second > 0
    assert (c.seconds, c.hours, c.energy_kwh, c.cost_usd) == (None, None, None, None)


@pytest.mark.parametrize("name", ["RTX 4090", "RTX 3060 12GB", "H100 SXM"])
def test_energy_uses_tdp(name):
    arch = model(LLAMA2_7B).arch
    g = gpu(name)
    for n in (1, 4):
        setup = TrainSetup(num_gpus=n, sharding="fsdp" if n > 1 else "none")
        c = run_cost(arch, setup, g, dataset_tokens=10**8)
        kwh_at_tdp = g.tdp_watts * n * c.hours / 1000
        # a training GPU draws between ~40% and 100% of its TDP
        assert 0.4 * kwh_at_tdp <= c.energy_kwh <= kwh_at_tdp * (1 + 1e-12)
        doubled = run_cost(arch, setup, replace(g, tdp_watts=2 * g.tdp_watts), dataset_tokens=10**8)
        assert doubled.energy_kwh == pytest.approx(2 * c.energy_kwh)


def test_cost_uses_given_price_per_hour_first():
    arch = model(LLAMA2_7B).arch
    g = gpu("RTX 4090")
    c = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8, usd_per_hour=2.0, usd_per_kwh=100.0)
    assert c.cost_usd == pytest.approx(2.0 * c.hours)
    c4 = run_cost(arch, TrainSetup(num_gpus=4, sharding="fsdp"), g, dataset_tokens=10**8, usd_per_hour=2.0)
    assert c4.cost_usd == pytest.approx(2.0 * 4 * c4.hours)  # per GPU-hour
    free = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8, usd_per_hour=0.0)
    assert free.cost_usd == 0.0


def test_cost_falls_back_to_catalog_price():
    arch = model(LLAMA2_7B).arch
    g = gpu("H100 SXM")
    price = g.price()
    assert price is not None and price.kind == "on-demand"
    c = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8)
    assert c.cost_usd == pytest.approx(price.usd_per_hour * c.hours)
    # a catalog price beats electricity
    power_priced = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8, usd_per_kwh=100.0)
    assert power_priced.cost_usd == pytest.approx(c.cost_usd)


def test_cost_falls_back_to_electricity_then_none():
    arch = model(LLAMA2_7B).arch
    g = gpu("RTX 3060 12GB")
    assert g.price() is None
    c = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8, usd_per_kwh=0.25)
    assert c.cost_usd == pytest.approx(0.25 * c.energy_kwh)
    none = run_cost(arch, TrainSetup(), g, dataset_tokens=10**8)
    assert none.energy_kwh > 0
    assert none.cost_usd is None
    # the same through a GPU stripped of its prices
    h = replace(gpu("RTX 4090"), prices=())
    assert run_cost(arch, TrainSetup(), h, dataset_tokens=10**8).cost_usd is None


def test_activation_offloading_adds_its_host_copies_to_the_step():
    from planner.activations import activation_peak
    from planner.calibration import HOST_LINK_BYTES_PER_S
    from planner.catalog import resolve_model
    from planner.catalog.gpus import find_gpu
    from planner.cost import run_cost
    from planner.options import TrainSetup

    arch, gpu = resolve_model("meta-llama/Llama-3.1-8B").arch, find_gpu("RTX 4090")
    plain = TrainSetup(method="qlora", seq_len=32768, loss="chunked")
    offloaded = TrainSetup(method="qlora", seq_len=32768, loss="chunked", offload_activations=True)
    a, b = run_cost(arch, plain, gpu), run_cost(arch, offloaded, gpu)
    assert a.offload_seconds_per_step == 0
    # out in forward and back in backward, each checkpointed input once
    assert b.offload_seconds_per_step == 2 * activation_peak(arch, offloaded).offloaded / HOST_LINK_BYTES_PER_S
    step_a, step_b = 32768 / a.tokens_per_second, 32768 / b.tokens_per_second
    assert abs(step_b - step_a - b.offload_seconds_per_step) < 1e-9


def test_dora_costs_a_renormalization_per_step_that_more_tokens_amortize():
    from planner.cost import dora_seconds

    arch, gpu = resolve_model("meta-llama/Llama-3.1-8B").arch, find_gpu("A100 80GB")

    def tps(**changes):
        return run_cost(arch, TrainSetup(method="lora", **changes), gpu).tokens_per_second

    def ratio(seq_len: int) -> float:
        return tps(seq_len=seq_len, use_dora=True) / tps(seq_len=seq_len)

    assert ratio(512) < ratio(4096) < 1.0
    assert dora_seconds(arch, TrainSetup(method="lora"), gpu, 1e14) == 0
    # checkpointing renormalizes again in the recompute
    on = dora_seconds(arch, TrainSetup(method="lora", use_dora=True), gpu, 1e14)
    off = dora_seconds(arch, TrainSetup(method="lora", use_dora=True, grad_checkpointing=False), gpu, 1e14)
    assert on == pytest.approx(2 * off)
