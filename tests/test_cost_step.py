"""The time model's per-step terms (issue 19 point 1): the optimizer update and gradient clipping
over every trainable parameter, paid once per optimizer step whatever its tokens."""

import pytest

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost, update_seconds
from planner.options import TrainSetup

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")
N8 = LLAMA8.arch.total_params


def test_full_fine_tuning_pays_adamw_and_clipping_over_every_parameter_by_hand():
    g = find_gpu("RTX 4090")
    update, clip = update_seconds(LLAMA8.arch, TrainSetup(method="full", precision="bf16"), g)
    # bf16 weights, gradients and moments: read p, g, m, v, write p, m, v (14 bytes); clip 3 x 2
    assert update == pytest.approx(14 * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
    assert clip == pytest.approx(6 * N8 / g.bandwidth_bytes_per_s, rel=1e-9)
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
    # an adapter's update is tiny: LoRA barely notices the step size
    lora = [run_cost(LLAMA8.arch, TrainSetup(seq_len=512, batch_size=b), g).tokens_per_second for b in (1, 16)]
    assert lora[0] > 0.98 * lora[1]


def test_the_step_is_its_terms():
    c = run_cost(LLAMA8.arch, TrainSetup(method="qlora", gradient_accumulation_steps=4), find_gpu("RTX 4090"))
    s = c.step
    assert s is not None and s.total == pytest.approx(s.matmul + s.dequant + s.offload + s.adapter + s.optimizer
                                                      + s.clipping)
    assert c.tokens_per_second == pytest.approx(4 * 2048 / s.total)
    assert s.dequant == pytest.approx(4 * c.dequant_seconds_per_step)
