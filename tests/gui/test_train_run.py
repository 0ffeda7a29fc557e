"""The Train page driving the REAL trainer subprocess on the offline demo model (CPU).

One demo per module (built in-process: seconds). Every wait is a qtbot wait with a timeout; the
trainer's interpreter start-up (~8 s on 2 cores) dominates each run.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by the trainer: never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from planner.gui.train.page import TrainPage  # noqa: E402

RUN_TIMEOUT_MS = 120_000
pytestmark = pytest.mark.slow  # trains the demo model for real (each trainer start-up ~8 s)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.demo import make_demo

    out = tmp_path_factory.mktemp("train-page") / "demo"
    make_demo(out)
    return out


@pytest.fixture
def page(train_page):
    return train_page


def fill(page: TrainPage, demo: Path, **overrides: Any) -> None:
    """The demo's ready config on the form (a fresh run directory is generated), with overrides."""
    config = json.loads((demo / "run.json").read_text())
    config.pop("output_dir")
    page.form.set_fields({**config, **overrides})
    assert page.panel.start_button.isEnabled(), page.form.shown_error()


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_real_run_completes_with_charts_progress_and_run_changed(qtbot, page, demo):
    fill(page, demo, method="qlora", max_steps=8, save_steps=0)
    run_dir = page.fields()["output_dir"]
    preview = page.views.config_preview.toPlainText()
    changed: list[str] = []
    page.state.run_changed.connect(changed.append)
    with qtbot.waitSignal(page.process.finished, timeout=RUN_TIMEOUT_MS) as done:
        click(qtbot, page.panel.start_button)
        assert page.is_running() and not page.panel.start_button.isEnabled() and page.panel.stop_button.isEnabled()
        assert not page.form.isEnabled()
    assert done.args == [0, "completed"]
    launched = json.loads((Path(run_dir) / "config.json").read_text())
    assert {k: launched[k] for k in json.loads(preview)} == json.loads(preview)  # the trainer got the preview
    assert not Path(run_dir + ".json").exists() and page.launched is None  # nothing left beside it
    assert page.model.status == "completed"
    assert len(page.views.charts.loss_raw.xData) == 8 and len(page.views.charts.loss_ema.xData) == 8
    assert page.panel.progress.value() == page.panel.progress.maximum() == 8
    assert page.panel.status_label.text().startswith("Completed: 8 steps")
    assert changed.count(run_dir) >= 2  # on start and on end
    assert (Path(run_dir) / "adapter").is_dir()
    assert page.panel.start_button.isEnabled() and not page.panel.resume_button.isEnabled()
    assert page.fields()["output_dir"] != run_dir  # the next Start gets a new directory


def test_stop_and_save_then_resume_then_cancel(qtbot, page, demo):
    fill(page, demo, max_steps=200, save_steps=0)
    run_dir = Path(page.fields()["output_dir"])
    click(qtbot, page.panel.start_button)
    qtbot.waitUntil(lambda: page.model.step >= 1, timeout=RUN_TIMEOUT_MS)
    saved: list[int] = []
    page.process.event.connect(lambda e: saved.append(e["step"]) if e.kind == "checkpoint" else None)
    click(qtbot, page.panel.checkpoint_button)
    qtbot.waitUntil(lambda: bool(saved), timeout=30_000)
    assert page.is_running()  # a checkpoint on request does not end the run
    with qtbot.waitSignal(page.process.finished, timeout=60_000) as done:
        click(qtbot, page.panel.stop_button)
        assert not page.panel.stop_button.isEnabled() and page.panel.status_label.text().startswith("Stopping")
    assert done.args == [0, "stopped"] and page.model.status == "stopped"
    stopped_at = int(page.model.end["steps"])
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    assert page.panel.resume_button.isEnabled() and "resumable checkpoint" in page.panel.status_label.text()

    resumed: list[int] = []
    page.process.event.connect(lambda e: resumed.append(e["step"]) if e.kind == "step" else None)
    click(qtbot, page.panel.resume_button)
    qtbot.waitUntil(lambda: bool(resumed), timeout=RUN_TIMEOUT_MS)
    assert resumed[0] == stopped_at + 1
    assert page.model.start["resumed"] is True and page.model.loss.x[-1] == resumed[-1]
    with qtbot.waitSignal(page.process.finished, timeout=60_000) as done:
        click(qtbot, page.panel.cancel_button)
    assert done.args == [0, "cancelled"] and page.model.status == "cancelled"


def test_killed_trainer_is_reported_within_two_seconds(qtbot, page, demo):
    fill(page, demo, max_steps=200, save_steps=0)
    click(qtbot, page.panel.start_button)
    qtbot.waitUntil(lambda: page.model.status == "running", timeout=RUN_TIMEOUT_MS)
    os.kill(page.process.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: "exit code -9" in page.panel.status_label.text(), timeout=2000)
    text = page.panel.status_label.text()
    assert "crashed" in text and "SIGKILL" in text
    assert page.model.status == "orphaned" and page.panel.resume_button.isEnabled() and not page.is_running()


def test_malformed_dataset_shows_the_data_error(qtbot, page, demo, tmp_path):
    good = (demo / "data.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(good[:3] + ['{"messages": [broken'] + good[3:6]) + "\n")
    fill(page, demo, dataset=str(bad), max_steps=8)
    with qtbot.waitSignal(page.process.finished, timeout=RUN_TIMEOUT_MS) as done:
        click(qtbot, page.panel.start_button)
    assert done.args == [2, "failed"]
    text = page.panel.status_label.text()
    assert "data error: bad.jsonl line 4: malformed JSON" in text and "exit code 2" in text
    assert "Hint: fix the dataset" in text
    assert page.panel.start_button.isEnabled()  # fix the file and go again


def test_oom_dialog_applies_the_fix_and_restarts(qtbot, page, demo):
    fill(page, demo, max_steps=8, save_steps=0)
    # the form never carries test hooks from a config (issue 12): the test puts one in by hand
    page.form.base["extra"] = {"test_oom_at_step": 2}
    first_dir = page.fields()["output_dir"]
    click(qtbot, page.panel.start_button)
    qtbot.waitUntil(lambda: page.oom_dialog is not None and page.oom_dialog.isVisible(), timeout=RUN_TIMEOUT_MS)
    dialog = page.oom_dialog
    error = page.model.error
    assert error["type"] == "oom" and error["hint"] in dialog.informativeText()
    fix = json.loads(error["fix"])
    assert fix and dialog.apply_button is not None
    for key, value in fix.items():
        assert f"{key}: " in dialog.informativeText() and f"→ {value}" in dialog.informativeText()
    click(qtbot, dialog.apply_button)
    qtbot.waitUntil(lambda: page.is_running() and page.model.run_dir not in (None, first_dir), timeout=30_000)
    new_dir = Path(page.model.run_dir)
    qtbot.waitUntil(lambda: (new_dir / "config.json").is_file(), timeout=30_000)
    launched = json.loads((new_dir / "config.json").read_text())
    assert {k: launched[k] for k in fix} == fix
    assert {k: page.fields()[k] for k in fix} == fix
    with qtbot.waitSignal(page.process.finished, timeout=10_000):
        page.process.kill()  # the restart is what we checked; no need to train it


def test_make_demo_button_fills_the_form(qtbot, page):
    click(qtbot, page.form.demo_button)
    assert not page.form.demo_button.isEnabled() and not page.panel.start_button.isEnabled()
    demo = page.state.runs_root / "demo"
    qtbot.waitUntil(lambda: page.form.demo_button.isEnabled(), timeout=RUN_TIMEOUT_MS)
    f = page.fields()
    assert f["model"] == str(demo / "model") and f["dataset"] == str(demo / "data.jsonl")
    assert f["batch_size"] == 8 and f["max_seq_len"] == 64 and f["modules_to_save"] == ["lm_head"]
    assert Path(f["output_dir"]).parent == page.state.runs_root and page.panel.start_button.isEnabled()
    assert page.form.format_label.text() == "messages"



def test_closing_while_the_demo_builds_leaves_no_temporary_folder(qtbot, tmp_path):
    """Issue 13 point 12: closing the window mid-build ends make-demo cleanly."""
    from PySide6.QtCore import QSettings

    from planner.gui.state import AppState
    from planner.gui.window import MainWindow

    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(tmp_path / "runs")
    window = MainWindow(state=state)
    qtbot.addWidget(window)
    train = window.pages["train"]
    click(qtbot, train.form.demo_button)
    proc = train.demo._proc
    qtbot.waitUntil(lambda: any((tmp_path / "runs" / "demo").glob(".model.*.tmp")), timeout=60_000)
    window.close()
    assert proc.state() == proc.ProcessState.NotRunning and not train.demo.is_running()
    leftovers = [p.name for p in (tmp_path / "runs" / "demo").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_moe_demo_trains_from_the_page(qtbot, page):
    """Make demo model with Mixtral chosen, then Start: the tiny mixture of experts trains."""
    page.form.demo_arch.setCurrentIndex(page.form.demo_arch.findData("mixtral"))
    click(qtbot, page.form.demo_button)
    qtbot.waitUntil(lambda: page.form.demo_button.isEnabled(), timeout=RUN_TIMEOUT_MS)
    assert page.fields()["model"] == str(page.state.runs_root / "demo-mixtral" / "model")
    assert "Mixtral" in page.panel.status_label.text()
    page.form.set_fields({"max_steps": 6, "save_steps": 0, "batch_size": 4})
    with qtbot.waitSignal(page.process.finished, timeout=RUN_TIMEOUT_MS) as done:
        click(qtbot, page.panel.start_button)
    assert done.args == [0, "completed"]
    losses = list(page.views.charts.loss_raw.yData)
    assert len(losses) == 6 and losses[-1] < losses[0]


CHILD = """
import json, sys
from pathlib import Path
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from planner.gui.state import AppState
from planner.gui.train.page import TrainPage
ini, root, demo, action = sys.argv[1:5]
state = AppState(QSettings(ini, QSettings.Format.IniFormat))
state.set_runs_root(Path(root))
page = TrainPage(state)
config = json.loads(Path(demo, "run.json").read_text())
config.pop("output_dir")
page.form.set_fields({**config, "max_steps": 300, "save_steps": 0})
done = []
def on_event(event):
    if event.kind == "step" and not done:
        done.append(1)
        print(page.model.run_dir, flush=True)
        getattr(page, action)()  # what the window calls before it closes
        app.quit()
page.process.event.connect(on_event)
assert page.start()
app.exec()
"""


def _ended(run_dir: Path) -> dict | None:
    """The run's end event once the trainer has written it and removed its pid file."""
    if (run_dir / "trainer.pid").exists() or not (run_dir / "metrics.jsonl").exists():
        return None
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return events[-1] if events and events[-1]["event"] == "end" else None


@pytest.mark.parametrize("action", ["detach", "stop_and_save"])
def test_the_trainer_outlives_the_app(qtbot, demo, tmp_path, action):
    """Closing the window must not SIGKILL the run: detach keeps it training, stop_and_save lets it save."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "s.ini"), str(tmp_path / "runs"), str(demo),
                            action], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    run_dir = Path(child.stdout.strip().splitlines()[-1])
    if action == "detach":
        pid = int((run_dir / "trainer.pid").read_text().split()[0])
        os.kill(pid, 0)  # still training after the app exited
        os.kill(pid, signal.SIGTERM)  # SIGTERM = stop: it must still be able to save and end cleanly
    qtbot.waitUntil(lambda: _ended(run_dir) is not None, timeout=60_000)
    end = _ended(run_dir)
    assert end["status"] == "stopped"
    assert (run_dir / "checkpoints" / f"checkpoint-{end['steps']}").is_dir()
