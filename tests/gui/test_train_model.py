"""The Train page's Qt-free logic: folding events, EMA, progress/ETA, status, replay, form checks."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from planner.gui.train.fields import (
    FieldError,
    config_text,
    launch_file,
    model_slug,
    new_run_dir,
    peek_dataset,
    resolve_paths,
    validate,
)
from planner.gui.train.run_model import (
    RunModel,
    describe_exit,
    ema,
    fmt_duration,
    gpu_process_bytes,
    parse_fix,
    replay,
)
from trainer.protocol import decode, encode

START = dict(model="m", method="qlora", params_total=1000, params_trainable=10, max_steps=4, run_dir="/r",
             predicted_peak_bytes=2**30)


def step(n: int, loss: float | None = 2.0, t: float | None = None, **extra) -> str:
    fields = dict(step=n, epoch=n / 4, loss=loss, lr=1e-4 * n, grad_norm=1.0, tokens_per_s=100.0 * n,
                  peak_alloc_bytes=0, peak_reserved_bytes=0, rss_bytes=2**29 * n, max_steps=4, eta_s=4.0 - n)
    fields.update(extra)
    return encode("step", t if t is not None else float(n), **fields)


def history(*lines: str) -> list[str]:
    return [encode("start", 0.5, **START), *lines]


def test_ema_is_debiased_and_smooths():
    assert ema([]) == []
    assert ema([5.0]) == [pytest.approx(5.0)]  # no ramp up from zero
    assert ema([4.0, 4.0, 4.0]) == [pytest.approx(4.0)] * 3
    smoothed = ema([10.0, 0.0], weight=0.5)
    assert smoothed[1] == pytest.approx((0.5 * 5.0 + 0.0) / (1 - 0.25))
    assert ema([1.0, 1.0], weight=0.0) == [1.0, 1.0]


def test_fold_builds_every_series():
    m = replay(history(step(1, 3.0), step(2, 2.0), encode("eval", 2.1, step=2, eval_loss=2.5),
                       encode("checkpoint", 2.2, step=2, path="/r/checkpoints/checkpoint-2")))
    assert m.loss.x == [1.0, 2.0] and m.loss.y == [3.0, 2.0]
    assert m.loss_ema.y == pytest.approx(ema([3.0, 2.0]))
    assert m.eval_loss.x == [2.0] and m.eval_loss.y == [2.5]
    assert m.lr.y == pytest.approx([1e-4, 2e-4])
    assert m.tokens_per_s.y == [100.0, 200.0]
    assert m.rss.y == [2**29, 2**30] and m.peak_alloc.y == [0.0, 0.0]
    assert m.predicted_peak_bytes == 2**30
    assert m.checkpoints == [(2, "/r/checkpoints/checkpoint-2")]
    assert m.run_dir == "/r" and m.start["method"] == "qlora"


def test_revision_moves_on_every_change():
    m = RunModel()
    before = m.revision
    m.fold(decode(encode("start", 0.0, **START)))
    m.fold(decode(step(1)))
    assert m.revision == before + 2


def test_diverged_loss_is_a_gap_not_a_point():
    m = replay(history(step(1, 3.0), step(2, float("nan")), step(3, 1.0)))
    assert m.loss.x == [1.0, 3.0]
    assert m.lr.x == [1.0, 2.0, 3.0] and m.step == 3


def test_progress_and_eta():
    m = RunModel()
    m.begin("/r")
    assert m.status == "starting" and m.progress().fraction is None
    for line in history(step(1, t=2.0), step(2, t=3.0)):
        m.fold_line(line)
    p = m.progress()
    assert (p.step, p.total, p.eta_s) == (2, 4, 2.0)
    assert p.fraction == 0.5 and p.elapsed_s == 3.0
    m.fold_line(encode("end", 5.0, status="completed", steps=4, runtime_s=5.0, output_dir="/r"))
    assert m.status == "completed" and m.progress().eta_s is None and m.step == 4
    assert "Completed: 4 steps" in m.status_text()


def test_resume_rewinds_superseded_steps_and_adds_time():
    # killed after step 3 with a checkpoint at 2: the resumed process redoes step 3
    lines = history(step(1, 3.0, t=1.0), step(2, 2.0, t=2.0), step(3, 1.5, t=3.0))
    lines += [encode("start", 0.4, **{**START, "resumed": True}), step(3, 1.0, t=1.0), step(4, 0.5, t=2.0)]
    m = replay(lines)
    assert m.loss.x == [1.0, 2.0, 3.0, 4.0] and m.loss.y == [3.0, 2.0, 1.0, 0.5]
    assert m.loss_ema.y == pytest.approx(ema([3.0, 2.0, 1.0, 0.5]))
    assert m.progress().elapsed_s == 5.0  # 3 s before the kill + 2 s after the resume


def test_a_resumed_run_shows_its_total_time():
    """Issue 13, point 9: a run stopped after 35 s and resumed for 8 s trained 43 s, not "8 s"."""
    first = history(step(1, t=20.0), step(2, t=34.0),
                    encode("end", 35.0, status="stopped", steps=2, runtime_s=35.0, output_dir="/r"))
    second = [encode("start", 3.0, **{**START, "resumed": True, "runtime_before_s": 35.0}),
              step(3, t=6.0, runtime_s=41.0), step(4, t=7.5, runtime_s=42.5),
              encode("end", 8.0, status="completed", steps=4, runtime_s=43.0, session_runtime_s=8.0, output_dir="/r")]
    m = replay(first + second)  # the Train page's replay of the whole history
    assert m.progress().elapsed_s == 43.0
    assert m.status_text() == "Completed: 4 steps in 0:43."
    live = RunModel()  # following the resumed session alone (the page never saw the first)
    live.begin("/r")
    for line in second[:2]:
        live.fold_line(line)
    assert live.progress().elapsed_s == 41.0


def ranks(alloc: list[int], rss: list[int]) -> dict:
    """A multi-process step's per-rank fields; the unsuffixed ones are the max, as the trainer sends."""
    out = {f"{key}_rank{i}": v for key, values in (("peak_alloc_bytes", alloc), ("rss_bytes", rss))
           for i, v in enumerate(values)}
    out.update({f"peak_reserved_bytes_rank{i}": a for i, a in enumerate(alloc)})
    return dict(out, peak_alloc_bytes=max(alloc), peak_reserved_bytes=max(alloc), rss_bytes=max(rss))


def test_per_rank_memory_on_gpus_is_one_series_per_rank():
    m = replay(history(step(1, **ranks([3 * 2**30, 2**31], [2**29, 2**29])),
                       step(2, **ranks([4 * 2**30, 3 * 2**30], [2**29, 2**30]))))
    assert [s.y for s in m.rank_alloc] == [[3 * 2**30, 4 * 2**30], [2**31, 3 * 2**30]]
    assert [s.x for s in m.rank_rss] == [[1.0, 2.0], [1.0, 2.0]] and m.rank_rss[1].y == [2**29, 2**30]
    assert m.peak_alloc.y == [3 * 2**30, 4 * 2**30]  # the run-wide figure is still the max
    mem = m.rank_memory()
    assert mem.kind == "peak_alloc"
    assert [label for label, _ in mem.curves] == ["GPU 0 allocated", "GPU 1 allocated"]
    assert mem.curves[1][1] is m.rank_alloc[1]
    m.devices = (1, 3)  # the page launched the ranks on GPUs 1 and 3: the legend says so
    assert [label for label, _ in m.rank_memory().curves] == ["GPU 1 allocated", "GPU 3 allocated"]


def test_per_rank_memory_on_the_cpu_uses_each_process_rss():
    m = replay(history(step(1, **ranks([0, 0], [2**29, 2**30])), step(2, **ranks([0, 0], [2**30, 2**30]))))
    mem = m.rank_memory()
    assert mem.kind == "rss" and [label for label, _ in mem.curves] == ["rank 0 RSS", "rank 1 RSS"]
    assert [s.y for _, s in mem.curves] == [[2**29, 2**30], [2**30, 2**30]]


def test_one_process_has_no_rank_curves():
    m = replay(history(step(1), step(2)))
    assert m.rank_alloc == [] and m.rank_memory().kind == "" and m.rank_memory().curves == ()


def test_resume_rewinds_the_rank_series_too():
    lines = history(*(step(i, **ranks([2**30 * i, 2**30], [2**29, 2**29])) for i in (1, 2, 3)))
    lines += [encode("start", 0.4, **{**START, "resumed": True}),
              step(3, **ranks([2**30, 2**30], [2**29, 2**29]))]
    m = replay(lines)
    assert m.rank_alloc[0].x == [1.0, 2.0, 3.0] and m.rank_alloc[0].y == [2**30, 2**31, 2**30]


def test_replay_skips_torn_and_foreign_lines():
    lines = history(step(1), step(2))
    lines.insert(2, '{"v":1,"event":"step","t":1.5,"st')  # a kill tore this line
    lines.insert(1, "Some library printed this")
    m = replay(lines + [""])
    assert m.torn_lines == 2 and m.loss.x == [1.0, 2.0]
    assert m.status == "orphaned" and m.resumable
    assert "no end" in m.status_text()


def test_statuses_after_the_process_exits():
    m = RunModel()
    m.begin("/r")
    m.fold_line(history()[0])
    m.finish(-9)
    assert m.status == "orphaned" and m.resumable
    assert "exit code -9 (killed by SIGKILL)" in m.status_text()

    failed = replay([encode("error", 0.3, type="data", message="d.jsonl line 4: malformed JSON", hint="fix it"),
                     encode("end", 0.3, status="failed", steps=0, runtime_s=0.3, output_dir="/r")])
    failed.finish(2)
    assert failed.status == "failed" and not failed.resumable
    assert "data error: d.jsonl line 4: malformed JSON" in failed.status_text()
    assert "exit code 2" in failed.status_text()

    # a config error before any run directory: an error event, no end
    early = RunModel()
    early.begin("/r")
    early.fold_line(encode("error", 0.0, type="config", message="bad", hint="fix the run config"))
    early.finish(2)
    assert early.status == "failed"

    stopped = replay(history(step(1), encode("end", 2.0, status="stopped", steps=1, runtime_s=2.0, output_dir="/r")))
    assert stopped.resumable and "resumable checkpoint" in stopped.status_text()


def test_oom_fix_is_parsed_from_the_error_event():
    fix = json.dumps({"batch_size": 4, "gradient_accumulation_steps": 2})
    m = replay(history(step(1), encode("error", 2.0, type="oom", message="out of memory", hint="halve it", fix=fix)))
    assert m.oom_fix() == {"batch_size": 4, "gradient_accumulation_steps": 2}
    assert parse_fix(None) is None and parse_fix("{torn") is None and parse_fix("{}") is None


def test_formatting_helpers():
    assert fmt_duration(None) == "—" and fmt_duration(5) == "0:05" and fmt_duration(3723) == "1:02:03"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-15) == "exit code -15 (killed by SIGTERM)"


def test_gpu_process_bytes_is_the_fullest_gpu_of_the_process_tree():
    proc = lambda pid, used: SimpleNamespace(pid=pid, used_memory=used)  # noqa: E731
    gpus = [SimpleNamespace(processes=(proc(7, 100), proc(8, 5), proc(99, 1000))),
            SimpleNamespace(processes=(proc(9, 150),)), SimpleNamespace(processes=None)]
    assert gpu_process_bytes(gpus, {7}) == 100
    assert gpu_process_bytes(gpus, {7, 8, 9}) == 150  # torchrun's ranks, one per GPU
    assert gpu_process_bytes(gpus, {42}) is None
    assert gpu_process_bytes([SimpleNamespace(processes=(proc(7, None),))], {7}) is None


def test_the_process_tree_holds_the_children():
    import os
    import subprocess
    import sys

    from planner.gui.train.run_model import process_tree

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_tree(os.getpid()) >= {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()
    assert process_tree(2**22 + 12345) == {2**22 + 12345}  # a pid that cannot exist


# ---- the form's fields ---------------------------------------------------------------------------

@pytest.fixture
def good(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return {"model": str(tmp_path / "model"), "dataset": str(data), "output_dir": str(tmp_path / "run"),
            "method": "lora", "learning_rate": 2e-4, "batch_size": 1, "max_steps": -1, "epochs": 1.0}


@pytest.mark.parametrize("change, field, words", [
    ({"learning_rate": 0.0}, "learning_rate", "learning_rate: expected a number > 0 and <= 1e3"),
    ({"learning_rate": "abc"}, "learning_rate", "got 'abc'"),
    ({"batch_size": 0}, "batch_size", "batch_size: expected a whole number from 1 to 65536, got 0"),
    ({"max_steps": 0}, "max_steps", "0 trains nothing"),
    ({"method": "qlorra"}, "method", "'qlorra' is not one of"),
    ({"model": ""}, "model", "model: empty"),
    ({"model": "/nowhere/model"}, "model", "no folder"),
    ({"dataset": "d.txt"}, "dataset", "unsupported file type '.txt'"),
    ({"model": "EMPTY"}, "model", "has no config.json"),
    ({"dataset": "NOFORMAT"}, "dataset", "unknown format"),
    ({"output_dir": "FILE"}, "output_dir", "is a file"),
    ({"epochs": -1.0}, "epochs", "epochs: expected a number > 0 and <= 1e6"),
])
def test_validate_names_the_field(good, change, field, words, tmp_path):
    """Issue 13 point 7: what the page already knows is said before Start, beside the field."""
    special = {"EMPTY": tmp_path / "empty-model", "NOFORMAT": tmp_path / "odd.jsonl", "FILE": tmp_path / "a-file"}
    special["EMPTY"].mkdir()
    special["NOFORMAT"].write_text('{"question": "q", "reply": "r"}\n')
    special["FILE"].write_text("mine")
    change = {k: str(special[v]) if v in special else v for k, v in change.items()}
    error = validate({**good, **change})
    assert isinstance(error, FieldError) and error.field == field and words in error.message


def test_validate_accepts_good_fields_and_a_hub_id(good, tmp_path):
    assert validate(good) is None
    assert validate({**good, "model": "meta-llama/Llama-2-7b-hf"}) is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    assert validate(good).field == "output_dir"


def test_the_launch_config_is_a_private_temporary_file(tmp_path):
    path = launch_file('{"model": "m"}\n')
    try:
        assert path.read_text() == '{"model": "m"}\n'
        assert path.parent == Path(tempfile.gettempdir()) and path.name.startswith("finetune-launch-")
        assert path.stat().st_mode & 0o077 == 0  # others cannot read (or swap) what the trainer will run
    finally:
        path.unlink()


def test_run_dir_naming_and_config_text(tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5)
    first = new_run_dir(tmp_path, "meta-llama/Llama-2-7b-hf", "qlora", now)
    assert first == tmp_path / "Llama-2-7b-hf-qlora-20250102-030405"
    first.mkdir()  # the name is taken
    assert new_run_dir(tmp_path, "meta-llama/Llama-2-7b-hf", "qlora", now).name.endswith("-030405-2")
    assert model_slug("/x/demo/model") == "demo" and model_slug("we ird/na me") == "na-me"
    fields = {"model": "m", "lora_targets": ["all-linear"]}
    assert json.loads(config_text(fields)) == fields and config_text(fields).endswith("}\n")
    resolved = resolve_paths({"output_dir": "rel", "dataset": "d.jsonl", "model": "org/name"}, tmp_path)
    assert resolved["output_dir"] == str(tmp_path / "rel") and resolved["model"] == "org/name"


def test_peek_dataset_formats(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(10)))
    peek = peek_dataset(chat)
    assert peek.format == "messages" and len(peek.examples) == 3 and peek.examples[0] == "user: q0\nassistant: a0"
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": f"i{i}", "output": f"o{i}"} for i in range(5)]))
    assert peek_dataset(alpaca).format == "alpaca" and len(peek_dataset(alpaca).examples) == 3
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("text\nhello\nworld\n")
    assert peek_dataset(csv_file).examples == ("hello", "world")
    share = tmp_path / "s.jsonl"
    share.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}) + "\n")
    assert peek_dataset(share).format == "sharegpt"
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    assert "line 2" in peek_dataset(broken).note
    unknown = tmp_path / "u.jsonl"
    unknown.write_text('{"foo": 1}\n')
    assert peek_dataset(unknown).format is None and "unknown format" in peek_dataset(unknown).note
    assert peek_dataset(tmp_path / "missing.jsonl").note == "no such file"
