"""When gradients exist (accumulation or not) and what a CPU run's prediction leaves out."""

from dataclasses import replace

import pytest

from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup
from planner.units import GiB

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")


@pytest.mark.parametrize("setup", [
    TrainSetup(method="lora", seq_len=4096),
    TrainSetup(method="full", optimizer="adamw_8bit", grad_checkpointing=False, seq_len=2048),
    TrainSetup(method="qlora", modules_to_save=("lm_head",)),
])
def test_accumulation_keeps_the_gradients_through_forward(setup):
    fresh, held = estimate(LLAMA8, setup), estimate(LLAMA8, replace(setup, gradient_accumulation_steps=4))
    assert held.peak_allocated_bytes > fresh.peak_allocated_bytes
    # held: every gradient is part of the peak; fresh: only those backward has made by then
    assert held.breakdown.gradients >= fresh.breakdown.gradients
    assert held.peak_allocated_bytes - fresh.peak_allocated_bytes <= held.breakdown.gradients


def test_without_accumulation_a_loss_peak_has_no_layer_gradient_yet():
    """LoRA at 4,096 tokens peaks at the start of backward (the fp32 logits): no adapter has a
    gradient yet."""
    e = estimate(LLAMA8, TrainSetup(method="lora", seq_len=4096))
    assert e.peak_phase == "forward/backward" and e.breakdown.logits > 0 and e.breakdown.gradients == 0


def test_full_fine_tuning_holds_every_gradient_at_the_optimizer_step_either_way():
    for steps in (1, 8):
        e = estimate(LLAMA8, TrainSetup(method="full", optimizer="adamw_8bit", gradient_accumulation_steps=steps))
        assert e.breakdown.gradients >= 2 * LLAMA8.total_params  # bf16, at the step or through forward


def test_a_cpu_prediction_is_tensors_only():
    setup = TrainSetup(method="lora", precision="fp32", seq_len=512)
    gpu, cpu = estimate(LLAMA8, setup), estimate(LLAMA8, setup, device="cpu")
    assert cpu.breakdown.cuda_context == cpu.breakdown.allocator_slack == 0
    assert cpu.peak_allocated_bytes == cpu.peak_reserved_bytes == cpu.device_used_bytes
    assert gpu.peak_allocated_bytes - cpu.peak_allocated_bytes == 32 * 2**20  # cuBLAS's workspace


def test_cpu_adamw_steps_tensor_by_tensor():
    """torch's AdamW defaults to foreach on CUDA tensors only: on the CPU its temporaries are the
    largest tensor's, not one per trainable element."""
    setup = TrainSetup(method="full", precision="fp32", seq_len=256, optimizer="adamw_torch")
    gpu, cpu = estimate(LLAMA8, setup), estimate(LLAMA8, setup, device="cpu")
    assert gpu.peak_phase == cpu.peak_phase == "optimizer step"
    assert gpu.peak_allocated_bytes - cpu.peak_allocated_bytes > 25 * GiB  # 8B fp32 temporaries


def test_an_unknown_device_is_refused():
    with pytest.raises(PlannerError, match="cuda, cpu"):
        estimate(LLAMA8, TrainSetup(), device="tpu")


def test_offloading_moves_nothing_on_a_cpu_run():
    """Its host RAM is the memory it trains in: the checkpoints stay live tensors there."""
    setup = TrainSetup(method="lora", precision="fp32", seq_len=4096, offload_activations=True)
    cpu, plain = estimate(LLAMA8, setup, device="cpu"), estimate(LLAMA8, replace(setup, offload_activations=False),
                                                                 device="cpu")
    assert cpu.peak_allocated_bytes == plain.peak_allocated_bytes and cpu.host_bytes == 0
    assert estimate(LLAMA8, setup).host_bytes > 0  # on a GPU they leave it


def test_a_paged_optimizers_large_states_are_device_memory_outside_torchs_counts():
    """bitsandbytes keeps the state of tensors of 100,000 elements or more in CUDA managed memory:
    not in max_memory_allocated or reserved, but on the device until the driver moves it out."""
    paged = estimate(LLAMA8, TrainSetup(method="full", optimizer="paged_adamw_8bit"))
    plain = estimate(LLAMA8, TrainSetup(method="full", optimizer="adamw_8bit"))
    b = paged.breakdown
    assert b.paged_optimizer > 14 * GiB and b.optimizer < 0.3 * GiB  # 2 bytes a weight; the block scales stay
    assert paged.peak_allocated_bytes == pytest.approx(plain.peak_allocated_bytes - b.paged_optimizer, rel=0.001)
    assert paged.device_used_bytes == paged.peak_reserved_bytes + b.cuda_context + b.paged_optimizer
    assert sum(vars(b).values()) == paged.device_used_bytes  # the bars add up to what nvidia-smi shows
    # on the CPU bitsandbytes falls back to ordinary tensors
    on_cpu = estimate(LLAMA8, TrainSetup(method="full", optimizer="paged_adamw_8bit"), device="cpu")
    assert on_cpu.breakdown.paged_optimizer == 0


def test_lora_states_below_the_paging_threshold_stay_torch_tensors():
    """r=16: q_proj's A is 16 x 4096 = 65,536 elements (not paged), the MLP's 14,336-wide ones are."""
    setup = TrainSetup(method="lora", optimizer="paged_adamw_32bit")
    qv = estimate(LLAMA8, replace(setup, lora_targets=("q_proj", "v_proj"))).breakdown
    assert qv.paged_optimizer == 0 and qv.optimizer > 0
    mlp = estimate(LLAMA8, replace(setup, lora_targets=("gate_proj",))).breakdown
    assert mlp.paged_optimizer == 32 * 16 * 14_336 * 8 and mlp.optimizer == 32 * 16 * 4096 * 8
