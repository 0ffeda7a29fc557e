"""The optimizer step in backward (issue 15 point 5): full fine-tuning whose gradients never exist
all at once; the same updates as the usual step, a checkpoint that resumes them, and clear
refusals of what it cannot do."""

from __future__ import annotations

import pytest
from conftest import run_inprocess, steps, write_config

from trainer.config import ConfigError, TrainConfig, fields_of

FULL = dict(method="full", optimizer="adamw_torch", max_grad_norm=0.0, lr_scheduler_type="constant",
            learning_rate=1e-3, warmup_steps=0, save_steps=0, modules_to_save=[])


@pytest.mark.parametrize("change, words", [
    ({"method": "lora"}, "applies to method full"),
    ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps 1"),
    ({"max_grad_norm": 1.0}, "set max_grad_norm 0"),
    ({"num_processes": 2}, "one process"),
])
def test_what_it_cannot_do_is_refused_naming_the_fix(change, words):
    fields = {"model": "m", "dataset": "d.jsonl", "method": "full", "max_grad_norm": 0.0,
              "optimizer_in_backward": True, **change}
    with pytest.raises(ConfigError, match=words) as err:
        TrainConfig(**fields)
    assert err.value.field == "optimizer_in_backward"


def test_a_plan_with_it_turns_clipping_and_accumulation_off():
    from planner.errors import PlannerError
    from planner.launch import train_config_fields
    from planner.options import TrainSetup

    setup = TrainSetup(method="full", optimizer_in_backward=True)
    assert fields_of(setup)["max_grad_norm"] == 0.0
    fields = train_config_fields(setup, "m", 1.0)
    assert fields["gradient_accumulation_steps"] == 1
    with pytest.raises(PlannerError, match="gradient-accumulation-steps 1"):
        TrainSetup(method="full", optimizer_in_backward=True, gradient_accumulation_steps=4)
    TrainConfig(dataset="d.jsonl", **fields)  # a config the trainer accepts
    assert "max_grad_norm" not in fields_of(TrainSetup(method="full"))


def test_steps_in_backward_equal_the_usual_step_and_resume(demo_dir, tmp_path):
    import torch

    torch.set_num_threads(1)
    losses = {}
    for in_backward in (False, True):
        config = write_config(demo_dir, tmp_path / f"run-{in_backward}", max_steps=6,
                              optimizer_in_backward=in_backward, **FULL)
        code, events = run_inprocess(config)
        assert code == 0, events[-3:]
        losses[in_backward] = [s["loss"] for s in steps(events)]
    assert len(losses[True]) == 6 and losses[True][-1] < losses[True][0]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)

    # stopped at step 3 and resumed: every parameter's own optimizer state comes back
    run_dir = tmp_path / "stopped"
    config = write_config(demo_dir, run_dir, max_steps=6, optimizer_in_backward=True,
                          extra={"test_command_at_step": {"step": 3, "command": "stop"}}, **FULL)
    code, first = run_inprocess(config)
    assert code == 0 and first[-1]["status"] == "stopped"
    code, resumed = run_inprocess(None, resume=run_dir)
    assert code == 0 and resumed[-1]["status"] == "completed"
    after = [s["loss"] for s in steps(resumed)]
    assert after == pytest.approx(losses[True][3:], abs=1e-4)
