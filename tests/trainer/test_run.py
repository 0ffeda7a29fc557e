"""The trainer really trains: every method learns the demo task, adapters load in peft and
reproduce the trained logits, stop/resume continues the same run, errors are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_metrics, run_inprocess, steps, write_config

from trainer.protocol import decode, encode
from trainer.rundir import write_marker


@pytest.mark.parametrize("method, lr", [("qlora", 2e-3), ("lora", 2e-3), ("full", 2e-3)])
def test_every_method_learns(demo_dir, tmp_path, method, lr):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, method=method, learning_rate=lr, max_steps=60, save_steps=0)
    code, events = run_inprocess(config)
    assert code == 0
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
    assert events[-1]["status"] == "completed" and events[-1]["steps"] == 60
    start = events[0]
    assert start["method"] == method and start["data_format"] == "messages" and start["max_steps"] == 60
    assert start["predicted_peak_bytes"] > 0 and 0 < start["params_trainable"] <= start["params_total"]
    # logical counts, the planner's: QLoRA's packed 4-bit storage once read 2.40M for this 3.49M model,
    # and LoRA's total once included its adapters (3.98M); every method now reports the same total
    planned = _planned(run_dir)
    assert (start["params_total"], start["params_trainable"]) == (planned.params_total, planned.params_trainable)
    assert start["params_total"] == 3_493_120
    losses = [e["loss"] for e in steps(events)]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], f"loss {losses[0]:.3f} -> {losses[-5:]}"
    # stdout and metrics.jsonl carry the same valid events
    on_disk = read_metrics(run_dir)
    assert on_disk == events
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        decode(line)
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60
    assert summary["final_loss"] == pytest.approx(losses[-1])
    assert summary["predicted_peak_bytes"] == start["predicted_peak_bytes"] and summary["peak_measured_bytes"] > 0
    final = run_dir / ("model" if method == "full" else "adapter")
    expected = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (final / expected).is_file()
    assert not list(final.glob("*.bin"))


def test_adapter_reproduces_trained_logits(demo_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.config import TrainConfig
    from trainer.run import Run

    run_dir = tmp_path / "run"
    cfg = TrainConfig.load(write_config(demo_dir, run_dir, method="lora", max_steps=20, save_steps=0))
    run_dir.mkdir()
    write_marker(run_dir)  # as trainer.session claims it
    import io

    run = Run(cfg, run_dir, resume=False, stdin=io.StringIO(""), out=io.StringIO())
    run.setup()
    run.train()
    assert run.finish() == "completed"
    probe = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    trained = run.trainer.model.eval()
    with torch.no_grad():
        want = trained(input_ids=probe).logits
        base = AutoModelForCausalLM.from_pretrained(demo_dir / "model", dtype=torch.float32)
        untouched = base(input_ids=probe).logits
        loaded = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
        got = loaded(input_ids=probe).logits
    assert (want - untouched).abs().max() > 1e-2  # training changed the model
    assert (got - want).abs().max() < 1e-4
    run.sink.close()


def _planned(run_dir):
    from trainer.config import TrainConfig
    from trainer.prediction import predict

    return predict(TrainConfig.load(run_dir / "config.json"), "fp32")[2]


def _losses_by_step(events):
    return {e["step"]: e["loss"] for e in steps(events)}


def test_stop_then_resume_matches_uninterrupted(demo_dir, tmp_path):
    common = dict(method="lora", max_steps=12, save_steps=0, learning_rate=2e-3)
    code, straight = run_inprocess(write_config(demo_dir, tmp_path / "straight", **common))
    assert code == 0

    run_dir = tmp_path / "stopped"
    config = write_config(demo_dir, run_dir, extra={"test_command_at_step": {"step": 5, "command": "stop"}}, **common)
    code, first = run_inprocess(config)
    assert code == 0
    assert first[-1] == {**first[-1], "event": "end", "status": "stopped", "steps": 5}
    checkpoints = [e for e in first if e["event"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [5]
    assert (Path(checkpoints[0]["path"]) / ".complete").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"

    code, resumed = run_inprocess(None, resume=run_dir)
    assert code == 0 and resumed[0]["resumed"] is True
    assert resumed[0]["resumed_from"] == checkpoints[0]["path"]
    assert resumed[-1]["status"] == "completed" and resumed[-1]["steps"] == 12
    after = _losses_by_step(resumed)
    assert sorted(after) == list(range(6, 13))  # same step numbering, nothing repeated
    want = _losses_by_step(straight)
    for step, loss in after.items():
        assert loss == pytest.approx(want[step], abs=1e-4), step
    # the run's history holds both parts
    assert [e["event"] for e in read_metrics(run_dir)].count("start") == 2
    # and its time is both parts' (it once was the last part's alone: "8 s" for a run that trained 43 s)
    first_s, second_s = first[-1]["runtime_s"], resumed[-1]["session_runtime_s"]
    assert resumed[0]["runtime_before_s"] == first_s
    assert 0 < second_s < resumed[-1]["runtime_s"]
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["runtime_s"] == resumed[-1]["runtime_s"] == pytest.approx(first_s + second_s, abs=0.02)
    from planner.runs import read_run

    assert read_run(run_dir).runtime_s == summary["runtime_s"]
    steps_after = steps(resumed)
    assert steps_after[0]["runtime_s"] > first_s  # a step's total counts the earlier session too


def test_cancel_ends_without_saving(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, method="lora", max_steps=30, save_steps=0,
                          extra={"test_command_at_step": {"step": 3, "command": "cancel"}})
    code, events = run_inprocess(config)
    assert code == 0
    assert events[-1]["status"] == "cancelled" and events[-1]["steps"] == 3
    assert not [e for e in events if e["event"] == "checkpoint"]
    assert not (run_dir / "adapter").exists()
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))


def test_checkpoint_command_saves_and_continues(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, method="lora", max_steps=8, save_steps=0,
                          extra={"test_command_at_step": {"step": 3, "command": "checkpoint"}})
    code, events = run_inprocess(config)
    assert code == 0 and events[-1]["status"] == "completed" and events[-1]["steps"] == 8
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 8]  # asked for, and the last step


def test_out_of_memory_gives_computed_fix(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, method="lora", max_steps=10, batch_size=8,
                          extra={"test_oom_at_step": 2})
    code, events = run_inprocess(config)
    assert code == 3
    error = next(e for e in events if e["event"] == "error")
    assert error["type"] == "oom" and error["peak_bytes"] > 0 and error["budget_bytes"] > 0
    assert "predicted" in error["hint"] and "GiB" in error["hint"]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "failed"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_oom_hint_picks_the_nearest_fitting_config(demo_dir):
    from trainer.config import TrainConfig
    from trainer.prediction import oom_hint, predict

    cfg = TrainConfig.load(demo_dir / "run.json")
    big = TrainConfig(**{**cfg.to_dict(), "model": "meta-llama/Llama-2-7b-hf", "method": "lora",
                         "batch_size": 16, "max_seq_len": 4096, "grad_checkpointing": False})
    _, _, est = predict(big, "bf16")
    budget = 24 * 2**30
    assert est.device_used_bytes > budget
    hint, changes = oom_hint(big, "bf16", budget)
    assert changes["grad_checkpointing"] is True
    assert changes["batch_size"] < 16
    # the accumulation grows by exactly what the micro-batch lost: same global batch
    assert changes["batch_size"] * changes["gradient_accumulation_steps"] == 16
    fixed = TrainConfig(**{**big.to_dict(), **changes})
    assert predict(fixed, "bf16")[2].device_used_bytes <= budget
    assert "GiB of 24.0 GiB" in hint


@pytest.mark.parametrize("content, line", [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n', 2),
    ('{"instruction": "x"}\n', 1),
])
def test_data_errors_are_events_with_line_numbers(demo_dir, tmp_path, content, line):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, dataset=str(data)))
    assert code == 2
    error = next(e for e in events if e["event"] == "error")
    assert error["type"] == "data" and f"line {line}" in error["message"] and "\n" not in error["message"]
    assert events[-1]["status"] == "failed"
    assert read_metrics(run_dir)[-2]["event"] == "error"


def test_missing_dataset_is_a_data_error(demo_dir, tmp_path):
    code, events = run_inprocess(write_config(demo_dir, tmp_path / "run", dataset=str(tmp_path / "nope.jsonl")))
    assert code == 2 and next(e for e in events if e["event"] == "error")["type"] == "data"


@pytest.mark.parametrize("overrides, message", [
    ({"method": "qlroa"}, "did you mean qlora"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"bogus_field": 1}, "unknown field 'bogus_field'"),
])
def test_config_errors_exit_2(demo_dir, tmp_path, overrides, message):
    code, events = run_inprocess(write_config(demo_dir, tmp_path / "run", **overrides))
    assert code == 2
    assert events == [events[0]] and events[0]["event"] == "error" and events[0]["type"] == "config"
    assert message in events[0]["message"]


def test_unreadable_config_file_exits_2(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("model: [unclosed\n")
    code, events = run_inprocess(bad)
    assert code == 2 and events[0]["type"] == "config" and "YAML" in events[0]["message"]


def test_existing_run_dir_is_not_overwritten(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_marker(run_dir)  # a run of ours that trained a step
    (run_dir / "metrics.jsonl").write_text(encode("step", 1.0, step=1, epoch=0.0, loss=6.0, lr=0.0, grad_norm=1.0,
                                                  tokens_per_s=1.0, peak_alloc_bytes=0, peak_reserved_bytes=0,
                                                  rss_bytes=0) + "\n")
    before = (run_dir / "metrics.jsonl").read_bytes()
    code, events = run_inprocess(write_config(demo_dir, run_dir))
    assert code == 2 and "--resume" in events[0]["message"]
    assert (run_dir / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("model, message", [
    ("some-org/not-cached-model", "not found locally and the Hub is unreachable"),
    ("BIN", "no *.safetensors weights (only pickle"),
])
def test_model_errors(demo_dir, tmp_path, model, message):
    if model == "BIN":
        folder = tmp_path / "binmodel"
        folder.mkdir()
        (folder / "config.json").write_text((demo_dir / "model" / "config.json").read_text())
        (folder / "pytorch_model.bin").write_bytes(b"not loaded")
        model = str(folder)
    code, events = run_inprocess(write_config(demo_dir, tmp_path / "run", model=model))
    assert code == 2
    error = next(e for e in events if e["event"] == "error")
    assert error["type"] == "model" and message in error["message"]
