"""The Train page without a trainer: form, validation beside the fields, JSON preview, hand-offs, replay."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from planner.gui.common.run_process import _take_lines  # noqa: E402
from planner.gui.train.page import TrainPage  # noqa: E402
from trainer.protocol import encode  # noqa: E402


@pytest.fixture
def page(train_page):
    return train_page


@pytest.fixture
def sources(tmp_path):
    model = tmp_path / "demo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"reverse: a b {i}"},
                                                    {"role": "assistant", "content": f"{i} b a"}]}) + "\n"
                            for i in range(5)))
    return model, data


def fill(page: TrainPage, model: Path, data: Path) -> None:
    page.form.model_edit.setText(str(model))
    page.form.dataset_edit.setText(str(data))


def test_page_builds_and_waits_for_a_model(page):
    assert page.form.shown_error().startswith("model: empty")
    assert not page.panel.start_button.isEnabled()
    assert not page.panel.stop_button.isEnabled() and not page.panel.cancel_button.isEnabled()
    assert not page.panel.resume_button.isEnabled() and not page.is_running()
    assert page.form.output_edit.text().startswith(str(page.state.runs_root))


def test_bad_value_shows_beside_the_field_and_disables_start(page, sources):
    fill(page, *sources)
    assert page.form.shown_error() == "" and page.panel.start_button.isEnabled()
    page.form.lr_edit.setText("abc")
    label = page.form.errors["learning_rate"]
    assert not label.isHidden() and label.text().startswith("learning_rate: expected a number > 0")
    assert "got 'abc'" in label.text()
    assert not page.panel.start_button.isEnabled()
    page.form.lr_edit.setText("0")
    assert "got 0.0" in label.text() and not page.panel.start_button.isEnabled()
    page.form.lr_edit.setText("1e-4")
    assert label.isHidden() and page.panel.start_button.isEnabled()
    page.form.dataset_edit.setText(str(sources[1].with_name("missing.jsonl")))
    assert "does not exist" in page.form.errors["dataset"].text() and not page.panel.start_button.isEnabled()


def test_preview_is_the_exact_json_and_follows_the_form(page, sources):
    fill(page, *sources)
    page.form.batch_spin.setValue(6)
    page.form.steps_spin.setValue(42)
    text = page.views.config_preview.toPlainText()
    config = json.loads(text)
    assert config == page.fields() and text == json.dumps(page.fields(), indent=2) + "\n"
    assert list(config)[:3] == ["model", "dataset", "output_dir"]
    assert config["batch_size"] == 6 and config["max_steps"] == 42 and config["model"] == str(sources[0])


def test_dataset_preview_shows_format_and_three_examples(page, sources):
    fill(page, *sources)
    assert page.form.format_label.text() == "messages"
    preview = page.form.preview.toPlainText()
    assert "#1  user: reverse: a b 0" in preview and "#3" in preview and "#4" not in preview


def test_run_dir_follows_model_and_method_until_typed(page, sources):
    fill(page, *sources)
    auto = page.form.output_edit.text()
    assert Path(auto).name.startswith("demo-qlora-")
    page.form.method_box.setCurrentText("lora")
    assert Path(page.form.output_edit.text()).name.startswith("demo-lora-")
    page.form.output_edit.setText("mine")
    page.form.output_edit.textEdited.emit("mine")  # what typing emits
    page.form.method_box.setCurrentText("full")
    assert page.form.output_edit.text() == "mine"
    assert page.fields()["output_dir"] == str(page.state.runs_root / "mine")
    page.form.output_new.click()
    assert Path(page.form.output_edit.text()).name.startswith("demo-full-")


def test_plan_to_train_fills_the_form(page, sources):
    fill(page, *sources)
    page.state.plan_to_train.emit({"model": "meta-llama/Llama-2-7b-hf", "method": "lora", "batch_size": 4,
                                   "max_seq_len": 1024, "lora_r": 64, "grad_checkpointing": False,
                                   "optimizer": "paged_adamw_8bit", "epochs": 2.0})
    f = page.fields()
    assert (f["model"], f["method"], f["batch_size"], f["max_seq_len"], f["lora_r"]) == (
        "meta-llama/Llama-2-7b-hf", "lora", 4, 1024, 64)
    assert f["grad_checkpointing"] is False and f["optimizer"] == "paged_adamw_8bit" and f["epochs"] == 2.0
    assert f["dataset"] == str(sources[1])  # the plan has no data: the chosen file stays
    assert json.loads(page.views.config_preview.toPlainText())["optimizer"] == "paged_adamw_8bit"
    assert page.panel.start_button.isEnabled()


def test_open_run_replays_metrics_and_loads_the_config(page, sources, tmp_path):
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": str(sources[0]), "dataset": str(sources[1]),
                                                 "output_dir": str(run), "method": "lora", "batch_size": 3}))
    start = dict(model="m", method="lora", params_total=100, params_trainable=10, max_steps=10, run_dir=str(run),
                 predicted_peak_bytes=2**30)
    step = dict(epoch=0.1, loss=2.0, lr=1e-4, grad_norm=1.0, tokens_per_s=50.0, peak_alloc_bytes=0,
                peak_reserved_bytes=0, rss_bytes=2**30, max_steps=10, eta_s=9.0)
    lines = [encode("start", 0.1, **start)] + [encode("step", float(i), step=i, **step) for i in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"v":1,"event":"st')  # killed mid-write
    page.state.open_run.emit(str(run))
    assert page.model.torn_lines == 1 and page.model.status == "orphaned"
    assert len(page.views.charts.loss_raw.xData) == 3 and len(page.views.charts.rss.yData) == 3
    assert page.views.charts.predicted.isVisible() and page.views.charts.predicted.value() == pytest.approx(1.0)
    assert page.panel.progress.value() == 3 and page.panel.progress.maximum() == 10
    assert page.panel.resume_button.isEnabled() and "no end" in page.panel.status_label.text()
    f = page.fields()
    assert f["method"] == "lora" and f["batch_size"] == 3 and f["output_dir"] != str(run)


def test_a_mangled_number_is_refused_and_start_is_never_a_keypress(page, sources):
    """Issue 13 points 6 and 7."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    fill(page, *sources)
    assert page.panel.start_button.isEnabled()
    page.form.seq_spin.lineEdit().selectAll()
    QTest.keyClicks(page.form.seq_spin.lineEdit(), "4k")
    label = page.form.errors["max_seq_len"]
    assert not label.isHidden() and "'4k' is not a whole number" in label.text()
    assert not page.panel.start_button.isEnabled() and page.fields()["max_seq_len"] != 4
    assert not page.panel.start_button.isDefault() and not page.panel.start_button.autoDefault()
    assert page.panel.start_button.focusPolicy() == Qt.FocusPolicy.NoFocus


def test_an_opened_runs_hidden_keys_do_not_ride_into_later_runs(page, sources, tmp_path):
    """Issue 12, defect 8: a shared run that trusted remote code and carried test hooks."""
    run = tmp_path / "runs" / "shared"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": str(sources[0]), "dataset": str(sources[1]),
                                                 "output_dir": str(run), "trust_remote_code": True,
                                                 "extra": {"test_oom_at_step": 1}}))
    (run / "metrics.jsonl").write_text(encode("start", 0.1, model="m", method="lora", params_total=1,
                                              params_trainable=1, max_steps=1, run_dir=str(run),
                                              predicted_peak_bytes=None) + "\n")
    page.state.open_run.emit(str(run))
    assert page.form.trust_box.isChecked() and page.form.trust_box.isVisibleTo(page)  # shown, as the run had it
    fields = page.fields()
    assert fields["trust_remote_code"] is True and "extra" not in fields  # test hooks never travel
    other = tmp_path / "other-model"
    other.mkdir()
    page.form.model_edit.setFocus()
    page.form.model_edit.selectAll()
    from PySide6.QtTest import QTest

    QTest.keyClicks(page.form.model_edit, str(other))  # typed by the user: a new model starts distrusted
    assert not page.form.trust_box.isChecked() and page.fields()["trust_remote_code"] is False
    page.form.set_fields({"model": str(sources[0])})  # a plan or the demo: distrusted too
    assert page.fields()["trust_remote_code"] is False
    assert json.loads(page.views.config_preview.toPlainText())["trust_remote_code"] is False


FAKE_TRAINER = """
import signal, sys
metrics, end = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(metrics, "a") as fh:
        fh.write(end + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def fake_trainer(tmp_path):
    """A live process whose command line names the trainer and that, on SIGTERM (= stop), writes an end."""
    run = tmp_path / "runs" / "bg"
    run.mkdir(parents=True)
    end = encode("end", 9.0, status="stopped", steps=2, runtime_s=9.0, output_dir=str(run))
    proc = subprocess.Popen([sys.executable, "-c", FAKE_TRAINER, str(run / "metrics.jsonl"), end, "fake-trainer"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    (run / "trainer.pid").write_text(f"{proc.pid}\n")
    yield run, proc
    proc.kill()
    proc.wait(timeout=10)


def test_a_run_training_in_the_background_is_followed_and_stopped(qtbot, page, fake_trainer):
    run, proc = fake_trainer
    start = dict(model="m", method="lora", params_total=100, params_trainable=10, max_steps=10, run_dir=str(run),
                 predicted_peak_bytes=None)
    step = dict(epoch=0.1, loss=2.0, lr=1e-4, grad_norm=1.0, tokens_per_s=50.0, peak_alloc_bytes=0,
                peak_reserved_bytes=0, rss_bytes=2**30, max_steps=10, eta_s=9.0)
    metrics = run / "metrics.jsonl"
    metrics.write_text(encode("start", 0.1, **start) + "\n" + encode("step", 1.0, step=1, **step)[:20])
    page.open_run(str(run))
    assert page.model.status == "background" and not page.panel.resume_button.isEnabled()
    assert f"pid {proc.pid}" in page.panel.status_label.text() and page.model.step == 0
    assert page.panel.stop_button.isEnabled() and not page.panel.cancel_button.isEnabled() and not page.is_running()
    with open(metrics, "a") as fh:  # the trainer finishes its line and writes the next step
        fh.write(encode("step", 1.0, step=1, **step)[20:] + "\n" + encode("step", 2.0, step=2, **step) + "\n")
    qtbot.waitUntil(lambda: page.model.step == 2, timeout=5000)
    assert page.model.loss.x == [1.0, 2.0] and "in the background" in page.panel.status_label.text()
    changed: list[str] = []
    page.state.run_changed.connect(changed.append)
    page.panel.stop_button.click()  # SIGTERM: the fake writes its end event, as the trainer would
    qtbot.waitUntil(lambda: page.model.status == "stopped" and page.follower is None, timeout=5000)
    assert page.panel.resume_button.isEnabled() and changed == [str(run)]
    assert proc.wait(timeout=10) == 0


def test_partial_lines_wait_for_their_newline():
    buf = bytearray(b'{"a":1}\n{"b":')
    assert _take_lines(buf) == ['{"a":1}'] and buf == bytearray(b'{"b":')
    assert _take_lines(buf) == []
    buf += b'2}\r\n'
    assert _take_lines(buf) == ['{"b":2}'] and not buf


def test_importing_the_page_loads_no_torch(tmp_path):
    code = ("import planner.gui.train.page, sys; heavy = [m for m in ('torch', 'transformers', 'peft', "
            "'bitsandbytes', 'datasets') if m in sys.modules]; assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr


def test_nvml_sampler_follows_the_hardware(monkeypatch):
    """No GPU (this machine): no sampler. With one, the trainer's pid maps to its NVML bytes."""
    from types import SimpleNamespace

    import planner.hardware as hardware
    from planner.gui.train.run_model import nvml_sampler

    monkeypatch.setattr(hardware, "sample", lambda: SimpleNamespace(gpus=()))
    assert nvml_sampler() is None
    proc = SimpleNamespace(pid=4242, used_memory=3 * 2**30)
    gpus = (SimpleNamespace(processes=(proc,)), SimpleNamespace(processes=None))
    monkeypatch.setattr(hardware, "sample", lambda: SimpleNamespace(gpus=gpus))
    sampler = nvml_sampler()
    assert sampler(4242) == 3 * 2**30 and sampler(1) is None
