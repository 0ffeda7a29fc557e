"""Two processes on the CPU (torchrun, gloo) on the demo model, with DDP and with FSDP: the same
losses as one process with the same global batch, one voice (rank 0), per-rank memory, and
stop/resume across the same world size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import read_metrics, run_inprocess, steps, trainer_cmd, write_config

STEPS = 10
COMMON = dict(method="lora", max_steps=STEPS, save_steps=0, warmup_steps=2)


@pytest.fixture(scope="module")
def single(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """One process, batch 8: the losses the two-process runs must reproduce (4 per rank)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, batch_size=8, **COMMON))
    assert code == 0
    return [e["loss"] for e in steps(events)]


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_train_like_one_and_resume(demo_dir, tmp_path, single, sharding):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, batch_size=4, num_processes=2, sharding=sharding, **COMMON,
                          extra={"test_command_at_step": {"step": 5, "command": "stop"}})
    code, events = run_inprocess(config)
    assert code == 0, events[-2:]
    assert events[-1] == {**events[-1], "event": "end", "status": "stopped", "steps": 5}
    first = [e["loss"] for e in steps(events)]
    # one voice: each event once, though two processes trained
    assert [e["step"] for e in steps(events)] == [1, 2, 3, 4, 5]
    assert all(e["rss_bytes_rank0"] > 0 and e["rss_bytes_rank1"] > 0 for e in steps(events))
    checkpoint = run_dir / "checkpoints" / "checkpoint-5"
    assert (checkpoint / ".complete").is_file()
    assert (checkpoint / "rng_state_1.pth").is_file()  # every rank's part, before the marker
    if sharding == "fsdp":
        assert (checkpoint / "pytorch_model_fsdp_0").is_dir()  # sharded: one part per rank

    code, resumed = run_inprocess(None, resume=run_dir)
    assert code == 0, resumed[-2:]
    assert resumed[0]["event"] == "start" and resumed[0]["resumed_from"] == str(checkpoint)
    assert resumed[-1]["status"] == "completed" and resumed[-1]["steps"] == STEPS
    losses = first + [e["loss"] for e in steps(resumed)]
    assert losses == pytest.approx(single, rel=1e-3)
    assert losses[-1] < 0.8 * losses[0]
    # the final adapter is whole (gathered from the shards) and loads in peft
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(run_dir / "adapter")).r == 16
    assert len(read_metrics(run_dir)) == len(events) + len(resumed)
    summary = json.loads((run_dir / "run.json").read_text())
    largest = max(max(e["rss_bytes_rank0"], e["rss_bytes_rank1"]) for e in steps(resumed))
    # the largest rank's peak, not rank 0's (getrusage and psutil count pages slightly differently)
    assert summary["peak_measured_bytes"] >= 0.99 * largest


@pytest.mark.parametrize("command", ["stop", "cancel"])
def test_stdin_commands_reach_every_rank(demo_dir, tmp_path, command):
    """The app's path: a command on the launcher's stdin ends both ranks at the same step."""
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, batch_size=4, num_processes=2, **{**COMMON, "max_steps": 2000})
    proc = subprocess.Popen(trainer_cmd("run", "--config", str(config)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parents[2])
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "step" and events[-1]["step"] == 2:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
    assert proc.wait(timeout=120) == 0
    end = events[-1]
    assert end["event"] == "end" and 2 <= end["steps"] < 2000
    checkpoint = run_dir / "checkpoints" / f"checkpoint-{end['steps']}" / ".complete"
    if command == "stop":
        assert end["status"] == "stopped" and checkpoint.is_file()
    else:  # cancel: no rank saves anything
        assert end["status"] == "cancelled" and not list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert not (run_dir / "trainer.pid").exists()


@pytest.mark.parametrize("demo", ["demo_dir", "moe_demo_dir"])
def test_qlora_shards_with_fsdp(request, demo, tmp_path):
    """bitsandbytes' FSDP recipe: 4-bit weights stored in the compute dtype shard with the rest.
    The tiny Mixtral too, experts per expert in 4-bit: every rank runs every expert (one without
    tokens on a rank would leave the ranks reducing different gradients)."""
    run_dir = tmp_path / "run"
    config = write_config(request.getfixturevalue(demo), run_dir, batch_size=4, num_processes=2, sharding="fsdp",
                          **{**COMMON, "method": "qlora", "lora_dropout": 0.05, "max_steps": 6})
    code, events = run_inprocess(config)
    assert code == 0, events[-2:]
    losses = [e["loss"] for e in steps(events)]
    assert events[-1]["status"] == "completed" and len(losses) == 6 and losses[-1] < losses[0]
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(run_dir / "adapter")).r == 16


def test_a_worker_error_keeps_its_exit_code(demo_dir, tmp_path):
    """torchrun folds every failure into 1; the launcher reports rank 0's verdict instead."""
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, batch_size=4, num_processes=2, **COMMON,
                          model=str(tmp_path / "no-such-model"))
    code, events = run_inprocess(config)
    assert code == 2
    assert [e["event"] for e in events[-2:]] == ["error", "end"] and events[-2]["type"] == "model"


def test_an_oom_on_one_rank_is_reported_as_that_ranks_oom(demo_dir, tmp_path):
    """Rank 1 runs out of memory alone: rank 0 sees only a broken collective, yet the run reports
    rank 1's out-of-memory with the planner's fix (exit 3), not an internal error."""
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, batch_size=4, num_processes=2, **COMMON,
                          extra={"test_oom_at_step": {"step": 3, "rank": 1}})
    code, events = run_inprocess(config)
    assert code == 3
    error, end = events[-2:]
    assert error["event"] == "error" and error["type"] == "oom" and error["rank"] == 1
    assert error["message"].startswith("rank 1: out of memory") and json.loads(error["fix"])
    assert end["event"] == "end" and end["status"] == "failed"
