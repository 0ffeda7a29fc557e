"""planner.runs: the status of hand-built run directories, scan order and speed, delete safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planner.runs import EventReader, RunError, RunScanner, delete_run, load_events, read_run, scan_runs
from trainer.protocol import encode
from trainer.rundir import write_marker

GiB = 1024**3
START = dict(model="tiny", method="lora", params_total=100, params_trainable=10, max_steps=10, run_dir="x",
             predicted_peak_bytes=2 * GiB, predicted_reserved_bytes=2 * GiB, predicted_device_bytes=2 * GiB)


def step(n: int, loss: float = 2.0, alloc: int = 0, rss: int = GiB) -> str:
    return encode("step", n * 0.5, step=n, epoch=n / 10, loss=loss, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0,
                  peak_alloc_bytes=alloc, peak_reserved_bytes=alloc, rss_bytes=rss, max_steps=10)


def end(status: str = "completed", steps: int = 3) -> str:
    return encode("end", 9.0, status=status, steps=steps, runtime_s=9.0, output_dir="x")


def make_run(root: Path, name: str, lines: list[str] = (), summary: dict | None = None, config: bool = True,
             pid: int | str | None = None, checkpoint: str | None = None, mtime: float | None = None) -> Path:
    """A run directory as the trainer leaves it; ``checkpoint`` "complete" or "partial"."""
    path = root / name
    path.mkdir(parents=True)
    write_marker(path)
    if config:
        (path / "config.json").write_text(json.dumps({"model": "cfg-model", "method": "qlora", "dataset": "d"}))
    if lines:
        (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if summary is not None:
        (path / "run.json").write_text(json.dumps(summary) if isinstance(summary, dict) else summary)
    if pid is not None:
        (path / "trainer.pid").write_text(f"{pid}\n")
    if checkpoint:
        ck = path / "checkpoints" / "checkpoint-2"
        ck.mkdir(parents=True)
        if checkpoint == "complete":
            (ck / ".complete").write_text("ok\n")
    if mtime is not None:
        os.utime(path / "config.json", (mtime, mtime))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def trainer_process():
    """A live process whose command line mentions "trainer", as `python -m trainer run` does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time,sys; time.sleep(30)", "trainer"])
    yield proc
    proc.kill()
    proc.wait()


def test_completed_run_reads_run_json(tmp_path):
    summary = dict(status="completed", steps=3, final_loss=1.25, peak_measured_bytes=3 * GiB, peak_kind="host_rss",
                   predicted_peak_bytes=2 * GiB, peak_alloc_bytes=GiB, peak_alloc_phase="forward", runtime_s=12.5,
                   model="tiny", method="lora", error=None)
    path = make_run(tmp_path, "done", [encode("start", 0, **START), step(1), step(3), end()], summary,
                    checkpoint="complete")
    s = read_run(path)
    assert (s.status, s.model, s.method, s.steps, s.max_steps) == ("completed", "tiny", "lora", 3, 10)
    assert s.final_loss == 1.25 and s.runtime_s == 12.5 and s.peak_kind == "host_rss"
    assert s.ratio == pytest.approx(0.5) and s.peak_alloc_phase == "forward"  # allocated, never the RSS
    assert s.pid is None and not s.resumable  # a finished run has nothing to resume
    assert s.started == pytest.approx((path / "config.json").stat().st_mtime)


def test_run_json_alone_is_enough(tmp_path):
    path = make_run(tmp_path, "r", summary=dict(status="cancelled", steps=1, model="m", method="full"), config=False)
    s = read_run(path)
    assert (s.status, s.steps, s.model) == ("cancelled", 1, "m")


def test_running_run_shows_its_pid(tmp_path, trainer_process):
    path = make_run(tmp_path, "live", [encode("start", 0, **START), step(1, alloc=5 * GiB)],
                    pid=trainer_process.pid)
    s = read_run(path)
    assert s.status == "running" and s.pid == trainer_process.pid
    assert s.steps == 1 and s.peak_measured_bytes == 5 * GiB and s.peak_kind == "cuda_max_allocated"
    with pytest.raises(RunError, match="still training"):
        delete_run(path)
    assert path.is_dir()
    trainer_process.kill()
    trainer_process.wait()
    assert read_run(path).status == "orphaned"  # the trainer died without a word: nothing changed on disk


def test_a_resumed_run_is_running_despite_the_old_run_json(tmp_path, trainer_process):
    lines = [encode("start", 0, **START), step(1), end("stopped", 1), encode("start", 0, **START), step(2)]
    path = make_run(tmp_path, "resumed", lines, dict(status="stopped", steps=1), pid=trainer_process.pid)
    s = read_run(path)
    assert s.status == "running" and s.steps == 2


def test_a_pid_reused_by_another_program_is_not_a_trainer(tmp_path):
    import psutil

    if "trainer" in " ".join(psutil.Process().cmdline()):
        pytest.skip("this pytest was started with 'trainer' on its command line")
    path = make_run(tmp_path, "reused", [encode("start", 0, **START)], pid=os.getpid())
    assert read_run(path).status == "orphaned"


def test_orphaned_run_with_dead_pid_is_resumable_from_a_complete_checkpoint(tmp_path):
    pid = dead_pid()
    path = make_run(tmp_path, "killed", [encode("start", 0, **START), step(1), step(2, loss=1.5)], pid=pid,
                    checkpoint="complete")
    s = read_run(path)
    assert s.status == "orphaned" and s.pid == pid and s.resumable
    assert s.checkpoint == path / "checkpoints" / "checkpoint-2"
    assert s.final_loss == 1.5 and s.predicted_peak_bytes == 2 * GiB and s.runtime_s == 1.0


def test_a_resumed_run_shows_the_time_of_every_session(tmp_path, trainer_process):
    """Issue 13, point 9: the trainer's event clock restarts at each resume; a run that trained 35 s,
    stopped and resumed for 8 s shows 43 s (it showed 8), while training and after a kill too."""
    first = [encode("start", 0, **START), step(1), end("stopped", 1).replace('"runtime_s":9.0', '"runtime_s":35.0')]
    resumed = encode("start", 2.0, **START, runtime_before_s=35.0)
    later = encode("step", 7.0, step=2, epoch=0.2, loss=1.0, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0,
                   peak_alloc_bytes=0, peak_reserved_bytes=0, rss_bytes=GiB, max_steps=10, runtime_s=42.0)
    checkpoint = encode("checkpoint", 8.0, step=2, path="x")
    live = make_run(tmp_path, "live", first + [resumed, later, checkpoint], dict(status="stopped", runtime_s=35.0),
                    pid=trainer_process.pid)
    assert read_run(live).status == "running" and read_run(live).runtime_s == 43.0  # 42 at the step + 1 s since
    trainer_process.kill()
    trainer_process.wait()
    assert read_run(live).status == "orphaned" and read_run(live).runtime_s == 43.0
    done = make_run(tmp_path, "done", first + [resumed, later, encode("end", 8.0, status="completed", steps=2,
                                                                     runtime_s=43.0, output_dir="x")],
                    dict(status="completed", runtime_s=43.0, session_runtime_s=8.0))
    assert read_run(done).runtime_s == 43.0
    old = make_run(tmp_path, "old", [encode("start", 0, **START), step(1), step(2)])  # no totals recorded
    assert read_run(old).runtime_s == 1.0


def test_orphaned_without_pid_file_and_partial_checkpoint_is_not_resumable(tmp_path):
    path = make_run(tmp_path, "k", [encode("start", 0, **START), step(1)], checkpoint="partial")
    s = read_run(path)
    assert s.status == "orphaned" and s.pid is None and not s.resumable and s.checkpoint is None


def test_failed_oom_is_resumable_other_failures_are_not(tmp_path):
    oom = dict(status="failed", steps=2, error="oom: out of memory at 7.9 GiB measured (cuda)")
    data = dict(status="failed", steps=0, error="data: empty dataset")
    tail = [encode("start", 0, **START), end("failed", 2)]
    assert read_run(make_run(tmp_path, "oom", tail, oom, checkpoint="complete")).resumable
    s = read_run(make_run(tmp_path, "data", tail, data, checkpoint="complete"))
    assert s.status == "failed" and not s.resumable and s.error == "data: empty dataset"


def test_without_run_json_the_end_event_decides(tmp_path):
    lines = [encode("start", 0, **START), step(1), step(2, loss=0.5),
             encode("error", 3, type="oom", message="boom", hint="smaller batch"), end("failed", 2)]
    s = read_run(make_run(tmp_path, "r", lines, checkpoint="complete"))
    assert (s.status, s.steps, s.final_loss, s.error, s.resumable) == ("failed", 2, 0.5, "oom: boom", True)


def test_torn_last_line_is_skipped(tmp_path):
    path = make_run(tmp_path, "torn", [encode("start", 0, **START), step(1), step(2)], pid=dead_pid())
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write(step(3)[:40])  # SIGKILL mid-write
    s = read_run(path)
    assert s.status == "orphaned" and s.steps == 2
    assert [e.kind for e in load_events(path)] == ["start", "step", "step"]


@pytest.mark.parametrize("files", [
    {"config.json": "{not json"},
    {"config.json": "[1, 2]", "run.json": "garbage"},
    {"metrics.jsonl": "\x00\xff junk\n{\"v\": 1}\n"},
    {"metrics.jsonl": "", "run.json": json.dumps({"status": "exploded", "steps": "many"})},
    {"config.json": "{}", "trainer.pid": "not a pid"},
])
def test_malformed_directories_never_raise(tmp_path, files):
    path = tmp_path / "bad"
    path.mkdir()
    write_marker(path)  # ours, then damaged
    for name, text in files.items():
        (path / name).write_text(text)
    s = read_run(path)
    assert s.status in ("unknown", "orphaned") and s.steps is None and s.final_loss is None
    assert [r.name for r in scan_runs(tmp_path)] == ["bad"]


def test_config_only_is_unknown_but_listed_with_its_model(tmp_path):
    s = read_run(make_run(tmp_path, "c"))
    assert (s.status, s.model, s.method) == ("unknown", "cfg-model", "qlora")


def test_scan_lists_run_dirs_newest_first_and_skips_the_rest(tmp_path):
    now = time.time()
    for i, name in enumerate(["old", "newest", "middle"]):
        make_run(tmp_path, name, [encode("start", 0, **START)], mtime=now - {0: 300, 1: 0, 2: 100}[i])
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    assert [s.name for s in scan_runs(tmp_path)] == ["newest", "middle", "old"]
    assert scan_runs(tmp_path / "missing") == []


def test_scanner_rereads_only_changed_dirs(tmp_path, monkeypatch):
    import planner.runs as runs

    a = make_run(tmp_path, "a", [encode("start", 0, **START)], summary=dict(status="completed"))
    make_run(tmp_path, "b", [encode("start", 0, **START)], summary=dict(status="completed"))
    scanner = RunScanner()
    scanner.scan(tmp_path)
    read = []
    real = runs.read_run
    monkeypatch.setattr(runs, "read_run", lambda p: read.append(Path(p).name) or real(p))
    scanner.scan(tmp_path)
    assert read == []
    with open(a / "metrics.jsonl", "a") as fh:
        fh.write(step(1) + "\n")
    os.utime(a / "metrics.jsonl", ns=(0, time.time_ns() + 10**9))  # a coarse-mtime filesystem still sees it
    scanner.scan(tmp_path)
    assert read == ["a"]
    scanner.scan(tmp_path, force=frozenset({tmp_path / "b"}))
    assert read == ["a", "b"]


def test_event_reader_returns_only_complete_new_lines(tmp_path):
    path = make_run(tmp_path, "r", [encode("start", 0, **START)])
    reader = EventReader(path)
    assert [e.kind for e in reader.read_new()] == ["start"]
    with open(path / "metrics.jsonl", "a") as fh:
        line = step(1)
        fh.write(line[:20])
        fh.flush()
        assert reader.read_new() == []
        fh.write(line[20:] + "\n")
    assert [e["step"] for e in reader.read_new()] == [1]
    assert reader.read_new() == []


def test_delete_removes_a_finished_run_and_refuses_other_folders(tmp_path):
    path = make_run(tmp_path, "r", [encode("start", 0, **START), end()], pid=None)
    delete_run(path)
    assert not path.exists()
    plain = tmp_path / "photos"
    plain.mkdir()
    with pytest.raises(RunError, match="not a run directory"):
        delete_run(plain)
    assert plain.is_dir()


def test_scanning_200_long_runs_reads_only_head_and_tail(tmp_path):
    template = tmp_path / "template.jsonl"
    with open(template, "w") as fh:
        fh.write(encode("start", 0, **START) + "\n")
        for n in range(1, 10_000):
            fh.write(step(n, loss=1 + 1 / n) + "\n")
    root = tmp_path / "runs"
    for i in range(200):
        path = make_run(root, f"run-{i:03d}")
        try:
            os.link(template, path / "metrics.jsonl")  # 200 x 2.6 MB without writing 500 MB
        except OSError:
            (path / "metrics.jsonl").write_bytes(template.read_bytes())
    t0 = time.perf_counter()
    runs = scan_runs(root)
    elapsed = time.perf_counter() - t0
    assert len(runs) == 200 and all(s.steps == 9_999 and s.status == "orphaned" for s in runs)
    assert elapsed < 1.0, f"scanning took {elapsed:.2f} s"


def test_load_events_takes_a_complete_last_line_without_newline(tmp_path):
    path = make_run(tmp_path, "r")
    (path / "metrics.jsonl").write_text(encode("start", 0, **START) + "\n" + end())
    assert [e.kind for e in load_events(path)] == ["start", "end"]
    assert read_run(path).status == "completed"


def test_a_cpu_runs_tensor_peak_is_not_read_as_a_gpu_peak(tmp_path):
    """Issue 16: a CPU run's steps carry its live tensor peak; without run.json the Runs page must
    not take it for CUDA's (and set it against the GPU prediction): RSS stays its measure."""
    start = {**START, "device": "cpu"}
    path = make_run(tmp_path, "cpu", [encode("start", 0, **start), encode("step", 1, step=1, epoch=0.1, loss=2.0,
                                      lr=1e-3, grad_norm=None, tokens_per_s=10.0, peak_alloc_bytes=15 * 2**20,
                                      peak_reserved_bytes=0, rss_bytes=600 * 2**20)])
    s = read_run(path)
    assert s.peak_kind == "host_rss" and s.peak_measured_bytes == 600 * 2**20


def test_ratio_is_allocated_against_predicted_allocated_on_both_devices(tmp_path):
    """Issue 16: a CPU run with a big RSS and small tensors gets the tensor ratio; a GPU run its CUDA peak."""
    start = {**START, "device": "cpu", "predicted_peak_bytes": 20 * 2**20}
    summary = dict(status="completed", steps=1, peak_measured_bytes=900 * 2**20, peak_kind="host_rss",
                   predicted_peak_bytes=20 * 2**20, peak_alloc_bytes=25 * 2**20, peak_alloc_phase="backward")
    cpu = read_run(make_run(tmp_path, "cpu", [encode("start", 0, **start), end(steps=1)], summary))
    assert cpu.ratio == pytest.approx(1.25) and cpu.device == "cpu" and cpu.peak_alloc_phase == "backward"
    gpu = read_run(make_run(tmp_path, "gpu", [encode("start", 0, **{**START, "device": "cuda"}), step(1, alloc=3 * GiB),
                                              end(steps=1)],
                            dict(status="completed", steps=1, predicted_peak_bytes=2 * GiB, peak_alloc_bytes=3 * GiB)))
    assert gpu.ratio == pytest.approx(1.5) and gpu.device == "cuda"


def test_a_killed_run_takes_its_last_steps_peak_allocated(tmp_path):
    path = make_run(tmp_path, "killed", [encode("start", 0, **{**START, "device": "cpu"}), step(1, alloc=2**20),
                                         step(2, alloc=GiB, rss=8 * GiB)])
    s = read_run(path)
    assert s.status == "orphaned" and s.peak_alloc_bytes == GiB and s.ratio == pytest.approx(0.5)


def test_no_ratio_without_a_measured_peak_or_a_prediction(tmp_path):
    no_peak = make_run(tmp_path, "a", [encode("start", 0, **START), step(1, alloc=0), end(steps=1)])
    assert read_run(no_peak).ratio is None  # a CPU step before the meter's first measurement says 0
    no_prediction = make_run(tmp_path, "b", summary=dict(status="completed", peak_alloc_bytes=GiB,
                                                         predicted_peak_bytes=0))
    assert read_run(no_prediction).ratio is None


def test_a_padded_run_is_compared_with_the_prediction_for_its_peak_batch(tmp_path):
    """Without packing a batch is padded to its longest sample: the peak step's shape (8 x 21
    tokens, say) is predicted again, and that, not the plan at max_seq_len, is the ratio's base."""
    summary = dict(status="completed", steps=1, predicted_peak_bytes=26 * 2**20, peak_alloc_bytes=15 * 2**20,
                   peak_batch_size=8, peak_seq_len=21, predicted_at_peak_bytes=16 * 2**20)
    run = read_run(make_run(tmp_path, "padded", [encode("start", 0, **{**START, "device": "cpu"}), end(steps=1)],
                            summary))
    assert run.peak_shape == (8, 21) and run.compared_bytes == 16 * 2**20
    assert run.ratio == pytest.approx(15 / 16)


def test_a_cpu_run_predicted_for_a_gpu_gets_no_ratio(tmp_path):
    """Runs recorded before CPU runs were predicted as such carry a GPU's prediction (cuBLAS's
    workspace and all): not the same kind as their tensors, so no ratio and no accuracy row."""
    old = {k: v for k, v in {**START, "device": "cpu", "predicted_peak_bytes": 60 * 2**20}.items()
           if k not in ("predicted_reserved_bytes", "predicted_device_bytes")}
    summary = dict(status="completed", steps=1, predicted_peak_bytes=60 * 2**20, peak_alloc_bytes=25 * 2**20)
    run = read_run(make_run(tmp_path, "old", [encode("start", 0, **old), end(steps=1)], summary))
    assert run.peak_alloc_bytes == 25 * 2**20 and run.predicted_peak_bytes is None and run.ratio is None
