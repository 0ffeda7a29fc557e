"""From a plan to a run (planner/launch.py): what the trainer can run, as the config it starts from."""

import pytest

from planner.launch import stack_note, train_config_fields, why_not_trainable
from planner.options import TrainSetup, at_micro_batch
from trainer.config import SHARDING_OF_PLAN, ConfigError, TrainConfig


@pytest.mark.parametrize("planned, trained", [("fsdp", "fsdp"), ("zero3", "fsdp"), ("ddp", "ddp"), ("none", "ddp")])
def test_shardings_the_trainer_runs(planned, trained):
    setup = TrainSetup(num_gpus=2, sharding=planned) if planned != "none" else TrainSetup()
    assert why_not_trainable(setup) is None
    fields = train_config_fields(setup, "meta-llama/Llama-3.1-8B", 1.0)
    assert fields["sharding"] == trained == SHARDING_OF_PLAN[planned]


@pytest.mark.parametrize("setup, words", [
    (TrainSetup(num_gpus=2, sharding="zero2"), "zero2"),
    (TrainSetup(num_gpus=2, sharding="fsdp", offload="optimizer"), "offload"),
    (TrainSetup(method="qlora", quant="2bit"), "2-bit"),
    (TrainSetup(kernels="unsloth"), "kernels"),
    (TrainSetup(kernels="compile"), "planned: compile"),
])
def test_what_the_trainer_cannot_run_is_named_and_never_silently_changed(setup, words):
    problem = why_not_trainable(setup)
    assert problem is not None and words in problem
    with pytest.raises(ConfigError):
        train_config_fields(setup, "m", 1.0)


def test_the_run_config_is_the_planned_setup():
    setup = TrainSetup(method="qlora", quant="fp4", optimizer="paged_adamw_8bit", batch_size=2, seq_len=4096,
                       grad_checkpointing=False, lora_r=32, lora_alpha=64, lora_dropout=0.1,
                       lora_targets=("q_proj", "v_proj"), num_gpus=2, sharding="fsdp", gradient_accumulation_steps=4)
    fields = train_config_fields(setup, "meta-llama/Llama-3.1-8B", 2.0)
    cfg = TrainConfig.from_dict({**fields, "dataset": "data.jsonl"})
    assert (cfg.method, cfg.quant, cfg.optimizer, cfg.batch_size, cfg.max_seq_len, cfg.grad_checkpointing,
            cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.num_processes, cfg.sharding,
            cfg.gradient_accumulation_steps, cfg.epochs) == (
        "qlora", "fp4", "paged_adamw_8bit", 2, 4096, False, 32, 64, 0.1, ("q_proj", "v_proj"), 2, "fsdp", 4, 2.0)


def test_a_smaller_micro_batch_keeps_the_global_batch_by_accumulation():
    def steps(batch: int, accumulation: int, micro: int, **kw) -> int:
        setup = TrainSetup(batch_size=batch, gradient_accumulation_steps=accumulation, **kw)
        return at_micro_batch(setup, micro).gradient_accumulation_steps

    assert (steps(8, 1, 2), steps(8, 1, 8), steps(2, 1, 8), steps(4, 2, 1)) == (4, 1, 1, 8)
    # the optimizer in backward steps every micro-batch: it never accumulates
    assert steps(8, 1, 2, method="full", optimizer_in_backward=True) == 1


def test_the_chunked_loss_runs_in_one_process_only():
    """The trainer's chunked loss calls the decoder beneath the DDP/FSDP wrapper: several
    processes are refused before any run, in the plan and in the config alike."""
    assert why_not_trainable(TrainSetup(loss="chunked")) is None
    problem = why_not_trainable(TrainSetup(loss="chunked", num_gpus=2, sharding="fsdp"))
    assert problem is not None and "one process" in problem
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_dict({"model": "m", "dataset": "d.jsonl", "loss": "chunked", "num_processes": 2})
    assert refused.value.field == "loss"


def test_a_plan_for_another_stack_says_what_use_this_plan_trains():
    from planner.stacks import load_stack

    assert stack_note(TrainSetup()) is None
    plan = load_stack("torchtune").apply(TrainSetup(method="lora"))
    note = stack_note(plan)
    assert note is not None and "this app's trainer" in note and "not with torchtune" in note
    assert "LinearCrossEntropyLoss projects only labelled tokens" in note
    # and the trainer takes every planned knob: the loss, the optimizer, the accumulation, the dtypes
    fields = train_config_fields(plan, "m", 1.0)
    assert (fields["loss"], fields["optimizer"], fields["gradient_accumulation_steps"], fields["adapter_dtype"]) == (
        "chunked-output", "adamw_torch_fused", 8, "bf16")
    TrainConfig.from_dict({**fields, "dataset": "d.jsonl"})
