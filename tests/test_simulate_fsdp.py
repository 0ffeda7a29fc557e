"""Precise mode on several GPUs: rank 0 of the FSDP2 the trainer runs (accelerate's own sharding
over torch's fake process group), on meta tensors as on real ones, and the estimator beside it."""

import pytest

from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup
from planner.simulate import PHASES, run_step, simulate

TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": False}


def test_the_private_fsdp_hooks_precise_mode_patches_are_those_of_the_torch_it_was_written_for():
    import importlib

    import torch

    assert torch.__version__.startswith("2.13"), "planner/simulate/fsdp.py: re-read FSDP2's hooks for this torch"
    group = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_param_group")
    param = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_param")
    assert hasattr(group.FSDPParamGroup, "_validate_no_meta_params")
    assert group.alloc_storage is param.alloc_storage and callable(param.free_storage)
    for name in ("_fsdp_init", "_fully_shard"):
        assert hasattr(importlib.import_module(f"torch.distributed.fsdp._fully_shard.{name}"), "_get_device_from_mesh")


@pytest.mark.parametrize("method, precision", [("lora", "bf16"), ("full", "bf16"), ("full", "fp32"),
                                               ("lora", "bf16-mixed")])
def test_meta_fsdp_step_matches_the_same_step_on_real_tensors(method, precision):
    setup = TrainSetup(method=method, precision=precision, batch_size=2, seq_len=128, num_gpus=4, sharding="fsdp")
    meta = run_step(TINY, 2, setup, "meta")
    real = run_step(TINY, 2, setup, "cpu")
    for phase in PHASES:
        assert meta[phase] == pytest.approx(real[phase], rel=0.01), phase


def test_the_fake_world_leaves_no_process_group_and_no_patch_behind():
    import importlib

    import torch
    import torch.distributed as dist

    init = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_init")
    before = init._get_device_from_mesh
    simulate(resolve_model("meta-llama/Llama-3.1-8B"), TrainSetup(method="lora", num_gpus=2, sharding="fsdp",
                                                                  seq_len=256))
    assert not dist.is_initialized()
    assert not hasattr(torch, "meta")
    assert init._get_device_from_mesh is before


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
@pytest.mark.parametrize("precision", ["bf16", "bf16-mixed"])
def test_fsdp_estimate_agrees_with_precise_mode_per_gpu(method, precision):
    """The terms precise mode checks: fp32 masters of trainable weights under 16-bit FSDP, the
    gathered final norm and LM head, sharded gradients made layer by layer, 16-bit all-gathers."""
    model = resolve_model("meta-llama/Llama-3.1-8B")
    setup = TrainSetup(method=method, precision=precision, seq_len=2048, num_gpus=8, sharding="fsdp")
    sim, est = simulate(model, setup), estimate(model, setup)
    assert est.peak_allocated_bytes == pytest.approx(sim.peak_allocated_bytes, rel=0.05)
    one_gpu = simulate(model, TrainSetup(method=method, precision=precision, seq_len=2048))
    assert sim.peak_allocated_bytes < one_gpu.peak_allocated_bytes


@pytest.mark.parametrize("setup, message", [
    (TrainSetup(method="lora", num_gpus=2, sharding="ddp"), "--sharding fsdp and no --offload"),
    (TrainSetup(method="lora", num_gpus=2, sharding="fsdp", offload="optimizer"), "--sharding fsdp and no --offload"),
])
def test_other_multi_gpu_plans_say_precise_mode_does_not_simulate_them(setup, message):
    with pytest.raises(PlannerError, match=message):
        simulate(resolve_model("meta-llama/Llama-3.1-8B"), setup)
