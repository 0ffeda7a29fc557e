"""The time model on several GPUs: ring collectives over each card's link, and what compute hides."""

from dataclasses import replace

import pytest

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost
from planner.options import TrainSetup

LLAMA2_7B = "meta-llama/Llama-2-7b-hf"


@pytest.mark.parametrize("sharding", ["ddp", "fsdp", "zero2", "zero3"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_more_gpus_more_throughput(sharding, method):
    """Over NVLink the collectives hide behind compute. Replicated (ddp) that is at most linear;
    sharded, each GPU also updates only its shard of the parameters."""
    arch = resolve_model(LLAMA2_7B).arch
    g = find_gpu("A100 80GB SXM")
    one = run_cost(arch, TrainSetup(method=method), g)
    prev = one.tokens_per_second
    for n in (2, 4, 8):
        run = run_cost(arch, TrainSetup(method=method, num_gpus=n, sharding=sharding), g)
        assert prev < run.tokens_per_second
        assert run.step.matmul == pytest.approx(one.step.matmul)  # each GPU computes its own micro-batch
        if sharding == "ddp":
            assert run.tokens_per_second <= n * one.tokens_per_second * (1 + 1e-9)
        prev = run.tokens_per_second


def test_collectives_by_hand_and_what_compute_does_not_hide():
    """Ring collectives (planner.communication.communication_seconds): DDP all-reduces the gradients once a
    step, 2 (n-1)/n of their bytes through each link; FSDP all-gathers every layer for forward and
    for backward and reduce-scatters the gradients, every micro-batch."""
    from planner.communication import communication_seconds
    from planner.gathering import layer_bytes
    from planner.params import params

    arch, g = resolve_model(LLAMA2_7B).arch, find_gpu("RTX 4090")
    full = TrainSetup(method="full", seq_len=512, num_gpus=2, sharding="ddp")
    grads = params(arch, full, arch.total_params).trainable_bytes
    ddp = communication_seconds(arch, full, g)
    assert (ddp.per_micro_batch, ddp.per_step) == (0.0, pytest.approx(2 * 0.5 * grads / 31.5e9))
    assert ddp.unhidden == pytest.approx(2 * 0.5 * 25 * 2**20 / 31.5e9)  # the last 25 MiB bucket
    # 13.5 GB of bf16 gradients over PCIe 4.0 take 0.43 s: longer than a 512-token backward
    assert run_cost(arch, full, g).step.communication > 0.1
    sharded = TrainSetup(method="qlora", num_gpus=4, sharding="fsdp")
    rest = (arch.embed_params + arch.lm_head_params + arch.final_norm_params) * 2
    packed = sum(b.count * layer_bytes(b, sharded) for b in arch.blocks) + rest
    trainable = params(arch, sharded, arch.total_params).trainable_bytes
    fsdp = communication_seconds(arch, sharded, g)
    assert (fsdp.per_micro_batch, fsdp.per_step) == (pytest.approx(0.75 * (2 * packed + trainable) / 31.5e9), 0.0)
    # 4-bit layers gather faster than they compute: only the first gather and last reduction show
    assert run_cost(arch, sharded, g).step.communication == pytest.approx(fsdp.unhidden)
    nvlink = TrainSetup(method="full", seq_len=2048, num_gpus=8, sharding="ddp")
    hidden = run_cost(arch, nvlink, find_gpu("H100 SXM")).step  # 450 GB/s: 52 ms, hidden but its last bucket
    assert hidden.communication == pytest.approx(communication_seconds(arch, nvlink, find_gpu("H100 SXM")).unhidden)
    # but not behind a 512-token backward (43 ms of compute in all)
    assert run_cost(arch, replace(nvlink, seq_len=512), find_gpu("H100 SXM")).step.communication > 0


def test_more_gpus_finish_sooner_but_cost_more_gpu_hours():
    arch = resolve_model(LLAMA2_7B).arch
    g = find_gpu("A100 80GB SXM")
    one = run_cost(arch, TrainSetup(), g, dataset_tokens=10**9)
    eight = run_cost(arch, TrainSetup(num_gpus=8, sharding="fsdp"), g, dataset_tokens=10**9)
    assert eight.hours < one.hours
    assert eight.hours * 8 > one.hours
    assert eight.cost_usd > one.cost_usd
