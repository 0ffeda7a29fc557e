"""planner.fit: the least disruptive change that the estimator says fits."""

from planner.catalog import resolve_model
from planner.fit import nearest_fit
from planner.memory import estimate
from planner.options import TrainSetup
from planner.units import GiB

LLAMA = resolve_model("meta-llama/Llama-3.1-8B")


def test_checkpointing_first_when_it_suffices():
    setup = TrainSetup(method="lora", grad_checkpointing=False, seq_len=2048)
    budget = estimate(LLAMA, TrainSetup(method="lora", seq_len=2048)).device_used_bytes
    fix = nearest_fit(LLAMA, setup, budget)
    assert fix.setup == TrainSetup(method="lora", seq_len=2048) and fix.accumulation_factor == 1
    assert fix.change.startswith("turn gradient checkpointing on")


def test_smaller_micro_batch_keeps_the_global_batch():
    fix = nearest_fit(LLAMA, TrainSetup(method="lora", batch_size=8), 24 * GiB)
    assert fix.setup.batch_size * fix.accumulation_factor == 8
    assert fix.estimate.device_used_bytes <= 24 * GiB
    # nothing more disruptive was needed
    assert fix.setup.method == "lora" and fix.setup.seq_len == 2048


def test_falls_back_to_qlora_then_shorter_sequences():
    fix = nearest_fit(resolve_model("meta-llama/Llama-2-70b-hf"), TrainSetup(method="lora"), 48 * GiB)
    assert fix.setup.method == "qlora" and fix.estimate.device_used_bytes <= 48 * GiB


def test_none_when_nothing_fits():
    assert nearest_fit(LLAMA, TrainSetup(method="lora"), 1 * GiB) is None


def test_prefix_tuning_is_never_told_to_turn_checkpointing_on():
    """It trains without it (transformers 5 drops the prefix inside a checkpointed layer)."""
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    fix = nearest_fit(spec, TrainSetup(peft="prefix", grad_checkpointing=False, batch_size=8), 20 * GiB)
    assert fix is not None and not fix.setup.grad_checkpointing and "checkpointing" not in fix.change
