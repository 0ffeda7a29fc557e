"""The time model's per-step terms (issue 19 point 1): the optimizer update and gradient clipping
over every trainable parameter, paid once per optimizer step whatever its tokens."""

from dataclasses import replace

import pytest

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost, update_seconds
from planner.options import TrainSetup

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")
N8 = LLAMA8.arch.total_params


def test_full_fine_tuning_pays_adamw_and_clipping_over_every_parameter_by_hand():
    g = find_gpu("RTX 4090")
    full = TrainSetup(method="full", precision="bf16", optimizer="adamw_torch_fused")
    update, clip = update_seconds(LLAMA8.arch, full, g)
    # bf16 weights, gradients and moments: read p, g, m, v, write p, m, v (14 bytes); clip 3 x 2
    assert update == pytest.approx(14 * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
    assert clip == pytest.approx(6 * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
    # torch's multi-tensor AdamW: lerp 3, mul 2, addcmul 3, sqrt 2, div 2, add 2, addcdiv 4 passes
    foreach, _ = update_seconds(LLAMA8.arch, replace(full, optimizer="adamw_torch"), g)
    assert foreach == pytest.approx(18 * 2 * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
    eight_bit, _ = update_seconds(LLAMA8.arch, TrainSetup(method="full", optimizer="adamw_8bit"), g)
    assert eight_bit == pytest.approx((3 * 2 + 4) * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
    _, none = update_seconds(LLAMA8.arch, TrainSetup(method="full", optimizer_in_backward=True), g)
    assert none == 0  # the optimizer in backward has no moment with every gradient to clip


def test_small_steps_lose_throughput_to_the_update_and_accumulation_wins_it_back():
    g = find_gpu("A100 80GB SXM")

    def tps(**kw):
        return run_cost(LLAMA8.arch, TrainSetup(method="full", seq_len=512, **kw), g).tokens_per_second

    small, large, accumulated = tps(batch_size=1), tps(batch_size=16), tps(batch_size=1, gradient_accumulation_steps=16)
    assert small < 0.8 * large  # 512 tokens a step pay a whole update over 8B parameters
    assert accumulated == pytest.approx(large, rel=0.05)
    # an adapter's update and the Trainer loop's own step take a few ms: LoRA barely notices the step size
    lora = [run_cost(LLAMA8.arch, TrainSetup(seq_len=512, batch_size=b), g).tokens_per_second for b in (1, 16)]
    assert lora[0] > 0.97 * lora[1]


def test_the_step_is_its_terms():
    c = run_cost(LLAMA8.arch, TrainSetup(method="qlora", gradient_accumulation_steps=4), find_gpu("RTX 4090"))
    s = c.step
    assert s is not None and s.total == pytest.approx(s.matmul + s.traffic + s.dequant + s.offload + s.adapter
                                                      + s.attention_scores + s.communication + s.host_wait
                                                      + s.optimizer + s.clipping)
    assert c.tokens_per_second == pytest.approx(4 * 2048 / s.total)
    assert s.dequant == pytest.approx(4 * c.dequant_seconds_per_step)


def test_a_fast_gpu_waits_for_the_host_on_small_micro_batches():
    """Eager PyTorch issues a LoRA layer's kernels in about 2.6 ms of host time with checkpointing
    (planner.calibration.HOST_SECONDS_PER_LAYER, measured): 32 layers take 82 ms whatever the
    tokens. An H100 computes 256 tokens in less, so it waits; an RTX 4090 never does at these sizes."""
    from planner.calibration import HOST_SECONDS_PER_LAYER, HOST_SECONDS_PER_STEP

    host = HOST_SECONDS_PER_LAYER[(True, True, False)] * LLAMA8.arch.num_layers

    def step(gpu: str, seq: int):
        return run_cost(LLAMA8.arch, TrainSetup(method="lora", seq_len=seq), find_gpu(gpu)).step

    def loop(s) -> float:  # the loop's own step waits beside the update's kernels (an adapter's: ~1 ms)
        return HOST_SECONDS_PER_STEP - s.optimizer - s.clipping

    small, large, slow = step("H100 SXM", 256), step("H100 SXM", 2048), step("RTX 4090", 256)
    assert small.host_wait > loop(small) > 0
    assert small.matmul + small.traffic + small.host_wait == pytest.approx(host + loop(small))
    assert large.host_wait == pytest.approx(loop(large))  # 2,048 tokens keep it busy longer than the host needs
    assert slow.host_wait == pytest.approx(loop(slow))
    assert small.total / 256 > 1.5 * large.total / 2048  # per token, the small step is much slower
    # accumulation does not help: every micro-batch is issued by the host
    acc = run_cost(LLAMA8.arch, TrainSetup(method="lora", seq_len=256, gradient_accumulation_steps=4),
                   find_gpu("H100 SXM")).step
    assert acc.host_wait == pytest.approx(4 * (small.host_wait - loop(small)) + loop(small))


def test_eager_attention_passes_over_every_score_and_multiplies_the_whole_matrix():
    """transformers' eager attention writes each head's (tokens x keys) scores, scales them, adds the
    mask, softmaxes in fp32 and casts back: 9 x 2 + 8 = 26 bytes per bf16 score in forward, twice
    in backward, once more in the recompute. Fused kernels skip the masked half of the matmuls."""
    from planner.cost import flops_per_token

    g = find_gpu("A100 80GB SXM")
    setup = TrainSetup(method="lora", batch_size=4, seq_len=1024, attention="eager")
    fused, eager = (run_cost(LLAMA8.arch, replace(setup, attention=a), g) for a in ("sdpa", "eager"))
    a = LLAMA8.arch
    scores = 4 * a.num_heads * 1024 * 1024 * a.num_layers
    assert eager.step.attention_scores == pytest.approx(scores * 26 * 4 / g.bandwidth_bytes_per_s)
    assert fused.step.attention_scores == 0
    half, whole = (flops_per_token(a, replace(setup, attention=x)).attention for x in ("sdpa", "eager"))
    assert whole == pytest.approx(2 * half)
    assert 0.75 < eager.tokens_per_second / fused.tokens_per_second < 0.9  # the score traffic costs ~18%


def test_narrow_models_on_short_steps_turn_their_matmuls_memory_bound():
    """Each weight's GEMM takes the longer of its FLOPs at the achieved rate and its operands' bytes
    over bandwidth (the roofline). Qwen2.5-0.5B (width 896) at 64 tokens reads its weights for
    little arithmetic; Llama-3.1-8B at 2,048 tokens is compute-bound in every GEMM."""
    from planner.calibration import MATMUL_UTILIZATION
    from planner.cost import flops_per_token, matmul_seconds

    g = find_gpu("H100 SXM")
    achieved = g.peak_flops * MATMUL_UTILIZATION

    def ratio(arch, seq: int) -> float:
        setup = TrainSetup(method="full", seq_len=seq, grad_checkpointing=False)
        f = flops_per_token(arch, setup)
        return matmul_seconds(arch, setup, g, achieved, f) / (seq * f.total / achieved)

    assert ratio(LLAMA8.arch, 2048) == pytest.approx(1.0)
    qwen = resolve_model("Qwen/Qwen2.5-0.5B").arch
    assert 1.0 < ratio(qwen, 2048) < 1.02  # only its 896 x 128 key and value projections wait on memory
    assert ratio(qwen, 64) > 2  # the weights read three times for 64 tokens' products


def test_a_compiled_step_issues_its_kernels_in_less_host_time():
    """torch.compile runs a layer's fused kernels from one graph call: measured at 0.99 ms per
    checkpointed LoRA layer against eager's 2.56 (scripts/bench_host_overhead.py --compile). At 256
    tokens an H100 waits for eager PyTorch's host, hardly for the compiled graph's."""
    def step(kernels: str):
        return run_cost(LLAMA8.arch, TrainSetup(method="lora", seq_len=256, kernels=kernels), find_gpu("H100 SXM")).step

    eager, compiled = step("eager"), step("compile")
    assert compiled.host_wait < eager.host_wait / 3
    assert compiled.total < 0.6 * eager.total


def test_adalora_pays_its_allocator_and_penalty_on_the_host_every_step():
    """scripts/bench_host_overhead.py: AdaLoRA's orthogonality penalty and rank allocator add about
    2 ms of host time per layer of seven adapted linears and step (HOST_SECONDS_ADALORA_PER_MODULE);
    on 32 layers that outweighs the allocator's own bytes on any GPU."""
    from planner.calibration import HOST_SECONDS_ADALORA_PER_MODULE

    g = find_gpu("H100 SXM")
    lora = run_cost(LLAMA8.arch, TrainSetup(method="lora"), g).step
    ada = run_cost(LLAMA8.arch, TrainSetup(method="lora", peft="adalora"), g).step
    assert ada.adapter == pytest.approx(32 * 7 * HOST_SECONDS_ADALORA_PER_MODULE)
    assert lora.adapter == 0
