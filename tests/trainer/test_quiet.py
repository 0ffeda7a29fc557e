"""Quiet logs (issue 13, point 11): the app's Log pane shows the trainer's stderr, so third-party
noise (bitsandbytes' "pip install kernels", transformers' FutureWarnings with their source lines,
tqdm bars) goes to ``<run_dir>/debug.log``; our own ``error:`` lines and a bug's traceback still
reach stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, run_inprocess, trainer_cmd, write_config

from trainer.rundir import DEBUG_LOG, WRITTEN

TIMEOUT = 180
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _trainer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(trainer_cmd(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def test_a_run_keeps_library_noise_out_of_stderr(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, method="qlora", max_steps=2, save_steps=0, batch_size=4)
    done = _trainer("run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["status"] == "completed"
    # before: the kernels warning, a weight-loading bar, two FutureWarnings with their source lines
    # and transformers' mtime note, seven lines in all on every start
    for noise in ("kernels", "Warning", "warnings.warn", "|█", "it/s"):
        assert noise not in done.stderr, done.stderr
    assert done.stderr == ""
    log = (run_dir / DEBUG_LOG).read_text()
    assert "session of pid" in log
    assert "Loading weights" in log and "█" in log  # tqdm's bar
    assert "FutureWarning" in log and "warnings.warn(" in log  # transformers' deprecations, source line and all
    if "kernels" in log:  # bitsandbytes says it only on CPUs with AVX512-BF16
        assert "pip install kernels" in log
    assert DEBUG_LOG in WRITTEN  # Delete removes it with the run

    # a resume appends its own session to the same log
    config_json = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config_json, "max_steps": 3}))
    again = _trainer("run", "--resume", str(run_dir))
    assert again.returncode == 0 and again.stderr == "", again.stderr[-2000:]
    assert (run_dir / DEBUG_LOG).read_text().count("session of pid") == 2


def test_our_errors_still_reach_stderr(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(demo_dir, run_dir, dataset=str(tmp_path / "missing.jsonl"), max_steps=2)
    done = _trainer("run", "--config", str(config))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.jsonl" in lines[0], done.stderr
    assert "error: " in (run_dir / DEBUG_LOG).read_text()  # the log reads in order, ours included


def test_a_config_error_before_the_run_is_one_line(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"model": "x", "dataset": "y.jsonl", "output_dir": str(tmp_path / "r"),
                                  "method": "qlora", "lora_r": 0}))
    done = _trainer("run", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


def test_a_bugs_traceback_reaches_stderr_and_library_noise_does_not(demo_dir, tmp_path, capsys, monkeypatch):
    from trainer.run import Run

    def broken(self):
        print("Map: 100%|██████████| 8/8", file=sys.stderr)  # what tqdm does
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(Run, "train", broken)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, max_steps=2, save_steps=0))
    err = capsys.readouterr().err
    assert code == 1 and events[-2]["type"] == "internal"
    assert "Traceback" in err and "RuntimeError: a bug of ours" in err
    assert "█" not in err
    log = (run_dir / DEBUG_LOG).read_text()
    assert "Map: 100%" in log and "RuntimeError: a bug of ours" in log
