"""Fault injection, as a user meets faults: ``python -m trainer`` on the wrong folder, twice at once,
after an edit, with a broken model or a full disk. Each ends in one clear line (exit 2, one error
event, no traceback), and every file that was there before is byte-identical afterwards.

One test per defect of issue 12, numbered as there.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics, run_inprocess, steps, trainer_cmd, write_config

TIMEOUT = 180
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


# -- helpers ------------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under ``roots`` (or the file itself), with its bytes."""
    files: dict[Path, bytes] = {}
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        files.update({p: p.read_bytes() for p in paths})
    return files


def assert_untouched(before: dict[Path, bytes]) -> None:
    changed = [str(p) for p, data in before.items() if not p.is_file() or p.read_bytes() != data]
    assert not changed, f"changed or gone: {changed}"


def trainer(*args: str, env: dict | None = None, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(trainer_cmd(*args), cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def events(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def assert_refused(done: subprocess.CompletedProcess, *words: str, kind: str | None = None) -> dict | None:
    """Exit 2, no traceback, one ``error:`` line on stderr; a ``run`` also says it in one error event."""
    assert done.returncode == 2, (done.returncode, done.stdout[-800:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    if kind is None:
        return None
    found = [e for e in events(done) if e["event"] == "error"]
    assert len(found) == 1, done.stdout
    assert found[0]["type"] == kind, found[0]
    return found[0]


def small_config(demo: Path, run_dir: Path, **overrides) -> Path:
    """The demo's config, two short steps; ``output_dir`` may be overridden with anything."""
    fields = dict(max_steps=2, save_steps=0, logging_steps=1, batch_size=4)
    fields.update(overrides)
    path = write_config(demo, run_dir, **{k: v for k, v in fields.items() if k != "output_dir"})
    if "output_dir" in fields:
        path.write_text(json.dumps({**json.loads(path.read_text()), "output_dir": fields["output_dir"]}))
    return path


@pytest.fixture(scope="module")
def trained(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed two-step run of the demo (in-process: no interpreter start-up)."""
    run_dir = tmp_path_factory.mktemp("faults") / "done"
    code, _ = run_inprocess(small_config(demo_dir, run_dir))
    assert code == 0
    return run_dir


# -- 1. export and make-demo never replace what is not theirs ---------------------------------------
@pytest.mark.parametrize("target", ["foreign", "run", "model", "file", "cwd"])
def test_export_refuses_a_target_that_is_not_a_previous_export(trained, demo_dir, tmp_path, target):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    afile = tmp_path / "file.bin"
    afile.write_bytes(b"\x00data")
    out, cwd = {"foreign": (str(foreign), ROOT), "run": (str(trained), ROOT), "model": (str(demo_dir / "model"), ROOT),
                "file": (str(afile), ROOT), "cwd": (".", foreign)}[target]
    before = snapshot(foreign, afile, trained, demo_dir / "model")
    done = trainer("export", "--run", str(trained), "--out", out, "--force", cwd=cwd)
    assert_refused(done)
    assert_untouched(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "mine"]  # no hidden .NAME.old either


def test_export_replaces_only_its_own_output_and_only_with_force(trained, tmp_path):
    out = tmp_path / "export"
    first = trainer("export", "--run", str(trained), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert (out / "adapter_model.safetensors").is_file()
    before = snapshot(out)
    assert_refused(trainer("export", "--run", str(trained), "--out", str(out)), "--force")
    assert_untouched(before)
    again = trainer("export", "--run", str(trained), "--out", str(out), "--force")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_make_demo_refuses_a_folder_that_is_not_its_demo_and_an_edited_demo(tmp_path):
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"mine": true}')
    before = snapshot(foreign)
    assert_refused(trainer("make-demo", "--out", str(foreign)), "not a demo")
    assert_untouched(before)

    demo = tmp_path / "demo"
    assert trainer("make-demo", "--out", str(demo)).returncode == 0
    edited = json.loads((demo / "run.json").read_text())
    edited["max_steps"] = 7
    (demo / "run.json").write_text(json.dumps(edited))
    before = snapshot(demo)
    assert_refused(trainer("make-demo", "--out", str(demo)), "run.json", "--force")
    assert_untouched(before)
    assert trainer("make-demo", "--out", str(demo), "--force").returncode == 0
    assert json.loads((demo / "run.json").read_text())["max_steps"] == 60


# -- 2. a run directory is new, empty or ours; Delete removes only what the run wrote ----------------
def test_run_refuses_a_folder_that_is_not_a_run(demo_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_dir / "model", model)
    before = snapshot(model)
    done = trainer("run", "--config", str(small_config(demo_dir, model)))
    assert_refused(done, "not a run of this trainer", kind="config")
    assert_untouched(before)
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in (demo_dir / "model").iterdir())


def test_run_refuses_an_empty_output_dir(demo_dir, tmp_path):
    before = snapshot(ROOT / "pyproject.toml")
    done = trainer("run", "--config", str(small_config(demo_dir, tmp_path / "x", output_dir="")))
    assert_refused(done, "output_dir", kind="config")
    assert_untouched(before)
    assert not (ROOT / "metrics.jsonl").exists()


def test_delete_keeps_files_the_run_did_not_write(trained, tmp_path):
    from planner.runs import delete_run, scan_runs

    run_dir = tmp_path / "runs" / "r"
    shutil.copytree(trained, run_dir)
    (run_dir / "notes.md").write_text("what I learned")
    assert [r.name for r in scan_runs(run_dir.parent)] == ["r"]
    kept = delete_run(run_dir)
    assert [p.name for p in kept] == ["notes.md"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.md"]
    assert (run_dir / "notes.md").read_text() == "what I learned"


# -- 3. a run that failed before its first step does not block the fixed config --------------------
def test_a_run_that_never_trained_makes_way_for_the_fixed_config(demo_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": "not a list"}\n')
    config = small_config(demo_dir, tmp_path / "run", dataset=str(data), max_steps=1)
    assert_refused(trainer("run", "--config", str(config)), kind="data")
    shutil.copy(demo_dir / "data.jsonl", data)  # the user fixes the data
    done = trainer("run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    history = read_metrics(tmp_path / "run")
    assert [e["event"] for e in history if e["event"] in ("start", "error")] == ["start"]  # the failed try is gone
    assert len(steps(history)) == 1


# -- 4. one trainer per run directory ------------------------------------------------------------
def test_a_second_trainer_on_the_same_folder_is_refused(demo_dir, tmp_path):
    config = small_config(demo_dir, tmp_path / "run", max_steps=200, extra={"test_command_at_step":
                                                                            {"step": 150, "command": "stop"}})
    first = subprocess.Popen(trainer_cmd("run", "--config", str(config)), cwd=ROOT, env=ENV, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        started = json.loads(first.stdout.readline())
        assert started["event"] == "start", started
        pid_file = (tmp_path / "run" / "trainer.pid").read_bytes()
        assert_refused(trainer("run", "--config", str(config)), "in use", kind="config")
        assert_refused(trainer("run", "--resume", str(tmp_path / "run")), "in use", kind="config")
        assert (tmp_path / "run" / "trainer.pid").read_bytes() == pid_file  # the loser removed nothing
        from planner.runs import RunError, delete_run, read_run

        assert read_run(tmp_path / "run").status == "running"  # the app sees the lock
        with pytest.raises(RunError, match="still training"):
            delete_run(tmp_path / "run")
        first.stdin.write("stop\n")
        first.stdin.flush()
        rest = first.communicate(timeout=TIMEOUT)[0]
    finally:
        first.kill()
    assert first.returncode == 0
    assert json.loads(rest.splitlines()[-1])["event"] == "end"
    history = read_metrics(tmp_path / "run")
    assert [e["event"] for e in history].count("start") == 1
    assert [s["step"] for s in steps(history)] == sorted({s["step"] for s in steps(history)})  # no interleaving


# -- 5. a completed run resumes to "already complete" unless asked to train longer ---------------
def test_resuming_a_completed_run_changes_nothing(trained, tmp_path):
    run_dir = tmp_path / "done"
    shutil.copytree(trained, run_dir)
    before = snapshot(run_dir)
    done = trainer("run", "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    end = events(done)[-1]
    assert end["event"] == "end" and end["status"] == "completed" and "already complete" in end["note"]
    assert_untouched(before)
    assert snapshot(run_dir).keys() == before.keys()

    config = json.loads((run_dir / "config.json").read_text())
    config["max_steps"] = 3  # asked on purpose: train on from the final checkpoint
    (run_dir / "config.json").write_text(json.dumps(config))
    more = trainer("run", "--resume", str(run_dir))
    assert more.returncode == 0, more.stderr[-2000:]
    start = next(e for e in events(more) if e["event"] == "start")
    assert start["resumed_from"].endswith("checkpoint-2")
    assert [s["step"] for s in steps(events(more))] == [3]


# -- 6. a config edited where the checkpoint depends on it is refused, naming the fields ---------
@pytest.mark.parametrize("edit", [{"lora_r": 32}, {"method": "lora"}, {"modules_to_save": []},
                                  {"learning_rate": 1e-5, "seed": 7}, {"batch_size": 2}])
def test_resume_refuses_an_edited_config(trained, tmp_path, edit):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / "run.json").unlink()  # as if stopped: resumable
    config = json.loads((run_dir / "config.json").read_text())
    config.update(edit)
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    done = trainer("run", "--resume", str(run_dir))
    assert_refused(done, "was edited", *edit, kind="config")
    assert_untouched(before)


# -- 7. RANK / WORLD_SIZE from the shell do not reach a single-process run -------------------------
@pytest.mark.slow
@pytest.mark.parametrize("inherited", [{"RANK": "1"}, {"RANK": "abc", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}])
def test_launch_variables_from_the_shell_are_ignored(demo_dir, tmp_path, inherited):
    run_dir = tmp_path / "run"
    done = trainer("run", "--config", str(small_config(demo_dir, run_dir, max_steps=1)), env={**ENV, **inherited})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [e["event"] for e in events(done)][-1] == "end"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


# -- 9. faults end as one error event and exit 2 ---------------------------------------------------
@pytest.mark.parametrize("case", ["file", "unwritable", "model type", "dataset type", "output type", "huge rank",
                                  "nul"])
def test_bad_run_configs_and_folders(demo_dir, tmp_path, case):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    overrides = {"file": {"output_dir": str(afile)}, "unwritable": {"output_dir": "/proc/self/fine-tune-run"},
                 "model type": {"model": ["x"]}, "dataset type": {"dataset": {"path": "d"}},
                 "output type": {"output_dir": 5}, "huge rank": {"lora_r": 10**30},
                 "nul": {"output_dir": "run\x00x"}}[case]
    before = snapshot(afile)
    done = trainer("run", "--config", str(small_config(demo_dir, tmp_path / "run", **overrides)))
    assert_refused(done, kind="config")
    assert_untouched(before)


@pytest.mark.parametrize("fault", ["truncated weights", "bad config value", "no tokenizer"])
def test_a_broken_model_folder_is_a_model_error(demo_dir, tmp_path, fault):
    model = tmp_path / "model"
    shutil.copytree(demo_dir / "model", model)
    if fault == "truncated weights":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif fault == "bad config value":
        config = json.loads((model / "config.json").read_text())
        config["hidden_size"] = "x"
        (model / "config.json").write_text(json.dumps(config))
    else:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            (model / name).unlink(missing_ok=True)
    done = trainer("run", "--config", str(small_config(demo_dir, tmp_path / "run", model=str(model))))
    assert_refused(done, kind="model")
    assert events(done)[-1]["event"] == "end"


def _file_size_limit(limit: int):
    def apply() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_during_a_checkpoint_is_an_io_error(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    done = trainer("run", "--config", str(small_config(demo_dir, run_dir, max_steps=2)),
                   preexec_fn=_file_size_limit(256 * 1024))
    error = assert_refused(done, "cannot write", kind="io")
    assert "resume" in error["hint"]
    assert events(done)[-1]["event"] == "end" and events(done)[-1]["status"] == "failed"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


# -- 11. smaller ones ---------------------------------------------------------------------------
def test_a_reused_pid_is_not_the_trainer(tmp_path):
    from planner.gui.train.follow import RunFollower
    from planner.runs import read_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".finetune-run.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"v":1,"event":"start","t":0.0,"model":"m","method":"lora",'
                                           '"params_total":1,"params_trainable":1,"max_steps":9,"run_dir":"r",'
                                           '"predicted_peak_bytes":null}\n')
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "trainer", "run"])
    try:
        time.sleep(0.2)
        # the dead trainer's PID, now another process whose arguments happen to say "trainer"
        (run_dir / "trainer.pid").write_text(f"{other.pid} {time.time() - 3600!r}\n")
        summary = read_run(run_dir)
        assert summary.status == "orphaned"
        assert RunFollower(run_dir, other.pid, 0).stop() is False
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


def test_a_model_folder_in_the_runs_root_is_not_a_run(demo_dir, tmp_path):
    from planner.runs import RunError, delete_run, scan_runs

    root = tmp_path / "runs"
    shutil.copytree(demo_dir / "model", root / "some-model")
    assert scan_runs(root) == []
    with pytest.raises(RunError):
        delete_run(root / "some-model")
    assert (root / "some-model" / "model.safetensors").is_file()


def test_a_run_directory_deleted_mid_run_ends_as_an_io_error(demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = small_config(demo_dir, run_dir, max_steps=400)
    proc = subprocess.Popen(trainer_cmd("run", "--config", str(config)), cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = iter(proc.stdout.readline, "")
        assert any(json.loads(line)["event"] == "step" for line in lines)
        shutil.rmtree(run_dir)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err
    tail = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in tail if e["event"] == "error"] == ["io"]
    assert tail[-1]["event"] == "end" and tail[-1]["status"] == "failed"
    assert not run_dir.exists()  # nothing recreated a stray half folder


def test_unknown_modules_to_save_is_a_model_error(demo_dir, tmp_path):
    done = trainer("run", "--config", str(small_config(demo_dir, tmp_path / "run", modules_to_save=["lm_haed"])))
    error = assert_refused(done, "lm_haed", kind="model")
    assert "lm_head" in error["message"]


def test_a_ragged_csv_row_is_a_data_error(demo_dir, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("instruction,output\nreverse a b,b a\nreverse c d\n")
    done = trainer("run", "--config", str(small_config(demo_dir, tmp_path / "run", dataset=str(data))))
    assert_refused(done, "line 3", "1 field but the header has 2", kind="data")
