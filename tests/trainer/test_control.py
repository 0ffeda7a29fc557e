"""The trainer as the app runs it: a subprocess with events on stdout and commands on stdin.

Stop and SIGTERM save and end within a step; SIGKILL at any moment leaves the last complete
checkpoint loadable, and --resume continues from it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, read_metrics, steps, trainer_cmd, write_config

from trainer.rundir import latest_checkpoint

TIMEOUT = 120


class Trainer:
    """A trainer subprocess whose events are read as they arrive (no sleeps)."""

    def __init__(self, *args: str):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(trainer_cmd(*args), cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.events: list[dict] = []

    def next_event(self) -> dict | None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return None  # the process closed stdout: it ended
                self.events.append(json.loads(line))
                return self.events[-1]
        raise AssertionError(f"no event within {TIMEOUT} s; got {self.events[-3:]}")

    def wait_for(self, predicate) -> dict:
        while (event := self.next_event()) is not None:
            if predicate(event):
                return event
        raise AssertionError(f"ended before the awaited event; last events {self.events[-3:]}")

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        while self.next_event() is not None:
            pass
        return self.proc.wait(timeout=TIMEOUT)


def _config(demo_dir: Path, run_dir: Path, **overrides) -> Path:
    return write_config(demo_dir, run_dir, **{"method": "lora", "max_steps": 200, "save_steps": 0, **overrides})


def test_stop_on_stdin_saves_within_one_step_and_resumes(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    t = Trainer("run", "--config", str(_config(demo_dir, run_dir)))
    seen = t.wait_for(lambda e: e["event"] == "step")["step"]
    assert (run_dir / "trainer.pid").read_text().split()[0] == str(t.proc.pid)  # and its start time
    t.send("stop")
    assert t.finish() == 0
    end = t.events[-1]
    assert end["event"] == "end" and end["status"] == "stopped"
    assert not (run_dir / "trainer.pid").exists()
    assert end["steps"] <= seen + 2  # the step in flight when the command arrived, then the next
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{end['steps']}"

    resumed = Trainer("run", "--resume", str(run_dir))
    first = resumed.wait_for(lambda e: e["event"] == "step")
    assert first["step"] == end["steps"] + 1
    resumed.send("cancel")
    assert resumed.finish() == 0 and resumed.events[-1]["status"] == "cancelled"


def test_sigterm_means_stop(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    t = Trainer("run", "--config", str(_config(demo_dir, run_dir)))
    t.wait_for(lambda e: e["event"] == "step")
    t.proc.send_signal(signal.SIGTERM)
    assert t.finish() == 0
    assert t.events[-1]["status"] == "stopped"
    assert [e for e in t.events if e["event"] == "checkpoint"]


def test_sigkill_leaves_last_checkpoint_loadable(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    t = Trainer("run", "--config", str(_config(demo_dir, run_dir, save_steps=2, max_steps=14)))
    saved = t.wait_for(lambda e: e["event"] == "checkpoint" and e["step"] >= 4)["step"]
    t.proc.kill()  # no chance to clean up
    t.proc.wait(timeout=TIMEOUT)
    # a checkpoint torn mid-write, as a kill during saving would leave it
    torn = run_dir / "checkpoints" / "checkpoint-999"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    (torn / "trainer_state.json").write_text('{"global_st')
    last = latest_checkpoint(run_dir)
    assert last is not None and int(last.name.split("-")[1]) >= saved

    resumed = Trainer("run", "--resume", str(run_dir))
    assert resumed.finish() == 0
    assert resumed.events[-1]["status"] == "completed" and resumed.events[-1]["steps"] == 14
    first = steps(resumed.events)[0]["step"]
    assert first == int(last.name.split("-")[1]) + 1
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    # every line of the history, torn or not, is skipped or decodes
    assert read_metrics(run_dir)[-1]["event"] == "end"


def test_make_demo_cli(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(trainer_cmd("make-demo", "--out", str(out)), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out.resolve() / "run.json")
    assert (out / "model" / "model.safetensors").is_file()


def test_bad_cli_usage_is_one_line(tmp_path):
    done = subprocess.run(trainer_cmd("run", "--config", str(tmp_path / "missing.json")), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert json.loads(done.stdout)["type"] == "config"
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
