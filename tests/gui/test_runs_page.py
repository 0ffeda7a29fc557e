"""The Runs page with real widgets over hand-built run directories in a temporary runs folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from planner.gui.runs.model import COLUMN
from planner.gui.runs.page import RunsPage
from planner.gui.state import AppState
from trainer.protocol import encode

GiB = 1024**3
START = dict(model="tiny-llama", method="qlora", params_total=100, params_trainable=10, max_steps=20,
             run_dir="x", predicted_peak_bytes=4 * GiB)


def step(n: int) -> str:
    return encode("step", n, step=n, epoch=n / 20, loss=3.0 / n, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0,
                  peak_alloc_bytes=int(3.5 * GiB) + n, peak_reserved_bytes=4 * GiB, rss_bytes=GiB, max_steps=20)


def make_run(root: Path, name: str, steps: int = 5, ended: str | None = "completed", age_s: float = 0,
             pid: int | None = None, checkpoint: bool = False) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": "tiny-llama", "method": "qlora", "dataset": "d"}))
    lines = [encode("start", 0, **START)] + [step(n) for n in range(1, steps + 1)]
    lines.insert(3, encode("eval", 2.5, step=2, eval_loss=1.7))
    if ended:
        lines.append(encode("end", steps + 1, status=ended, steps=steps, runtime_s=steps + 1.0, output_dir="x"))
        (path / "run.json").write_text(json.dumps(dict(
            status=ended, steps=steps, final_loss=3.0 / steps, peak_measured_bytes=int(3.5 * GiB),
            peak_kind="cuda_max_allocated", predicted_peak_bytes=4 * GiB, runtime_s=steps + 1.0,
            model="tiny-llama", method="qlora", error=None)))
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if pid is not None:
        (path / "trainer.pid").write_text(f"{pid}\n")
    if checkpoint:
        ck = path / "checkpoints" / "checkpoint-2"
        ck.mkdir(parents=True)
        (ck / ".complete").write_text("ok\n")
    t = time.time() - age_s
    os.utime(path / "config.json", (t, t))
    return path


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "old-done", steps=5, age_s=600)
    make_run(root, "stopped", steps=12, ended="stopped", age_s=300, checkpoint=True)
    make_run(root, "new-done", steps=8, age_s=0)
    return root


@pytest.fixture
def state(tmp_path, root):
    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(root)
    return state


@pytest.fixture
def page(qtbot, state):
    page = RunsPage(state)
    qtbot.addWidget(page)
    yield page
    page.loader.wait()  # no replay load may outlive the widget it reports to


def points(curve) -> int:
    """All the points given to the curve (getData() is clipped to the view and downsampled)."""
    return 0 if curve.xData is None else len(curve.xData)


def names(page: RunsPage) -> list[str]:
    proxy = page.proxy
    return [proxy.index(r, COLUMN["Run"]).data() for r in range(proxy.rowCount())]


def cell(page: RunsPage, name: str, column: str) -> str:
    row = names(page).index(name)
    return page.proxy.index(row, COLUMN[column]).data()


def test_lists_the_runs_newest_first_with_their_numbers(page, root):
    assert names(page) == ["new-done", "stopped", "old-done"]
    assert cell(page, "new-done", "Status") == "completed"
    assert cell(page, "stopped", "Status") == "stopped"
    row = names(page).index("stopped")
    assert "stopped, resumable" in page.proxy.index(row, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert cell(page, "new-done", "Steps") == "8 / 20"
    assert cell(page, "new-done", "Peak") == "3.50 GiB"
    assert cell(page, "new-done", "Predicted") == "4.00 GiB"
    assert cell(page, "new-done", "Ratio") == "0.88\u00d7"
    assert cell(page, "new-done", "Duration") == "9 s"
    status = page.proxy.index(0, COLUMN["Status"]).data(Qt.ItemDataRole.ForegroundRole)
    assert status.name() == "#2e9e44"
    assert page.root_edit.text() == str(root) and not page.empty_label.isVisible()


def test_selecting_a_run_replays_its_charts(page, qtbot, root):
    assert page.select_path(root / "stopped")
    qtbot.waitUntil(lambda: points(page.chart.loss_curve) == 12, timeout=5000)
    x, loss = page.chart.loss_curve.xData, page.chart.loss_curve.yData
    assert list(x) == list(range(1, 13)) and loss[0] == pytest.approx(3.0)
    assert points(page.chart.measured_curve) == 12 and page.chart.measured_curve.yData[0] == pytest.approx(3.5, 1e-6)
    assert points(page.chart.eval_curve) == 1
    assert page.chart.predicted_line.isVisible() and page.chart.predicted_line.value() == pytest.approx(4.0)
    assert page.train_button.text() == "Resume\u2026" and "stopped, resumable" in page.details.text()
    page.select_path(root / "new-done")
    qtbot.waitUntil(lambda: points(page.chart.loss_curve) == 8, timeout=5000)
    assert page.train_button.text() == "Show in Train"


@pytest.mark.parametrize("answer", [True, False])
def test_delete_asks_first(page, qtbot, root, answer):
    asked = []
    page.confirm = lambda run: asked.append(run.name) or answer
    page.select_path(root / "old-done")
    page.delete_button.click()
    assert asked == ["old-done"]
    assert (root / "old-done").exists() != answer
    assert ("old-done" in names(page)) != answer
    if answer:
        assert page.selected() is None and not page.delete_button.isEnabled()


def test_a_running_run_shows_its_pid_and_cannot_be_deleted(qtbot, state, root):
    proc = subprocess.Popen([sys.executable, "-c", "import time,sys; time.sleep(30)", "trainer"])
    try:
        make_run(root, "live", steps=3, ended=None, age_s=-5, pid=proc.pid)
        page = RunsPage(state)
        qtbot.addWidget(page)
        assert cell(page, "live", "Status") == f"running (PID {proc.pid})"
        page.select_path(root / "live")
        assert not page.delete_button.isEnabled()
        page.confirm = lambda run: True
        page.delete_selected()  # even when asked directly
        assert (root / "live").is_dir() and "Not deleted" in page.message.text()
        qtbot.waitUntil(lambda: points(page.chart.loss_curve) == 3, timeout=5000)
        with open(root / "live" / "metrics.jsonl", "a") as fh:
            fh.write(step(4) + "\n")
        page.refresh()  # a live run's chart grows by the appended lines
        assert points(page.chart.loss_curve) == 4
    finally:
        proc.kill()
        proc.wait()
    page.refresh()
    assert cell(page, "live", "Status") == f"orphaned (PID {proc.pid} gone)"


def test_resume_hands_the_run_to_the_train_page(page, qtbot, state, root):
    opened, pages = [], []
    state.open_run.connect(opened.append)
    state.page_requested.connect(pages.append)
    page.select_path(root / "stopped")
    page.train_button.click()
    assert opened == [str(root / "stopped")] and pages == ["train"]


def test_run_changed_refreshes_the_table(page, state, root):
    path = make_run(root, "brand-new", steps=2, ended=None, age_s=-60)
    assert "brand-new" not in names(page)
    state.run_changed.emit(str(path))
    assert names(page)[0] == "brand-new" and cell(page, "brand-new", "Status") == "orphaned"
    (path / "run.json").write_text(json.dumps(dict(status="completed", steps=2)))
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write(encode("end", 3, status="completed", steps=2, runtime_s=3.0, output_dir="x") + "\n")
    state.run_changed.emit(str(path))
    assert cell(page, "brand-new", "Status") == "completed"


def test_the_timer_picks_up_new_runs_while_visible(page, qtbot, root):
    page.timer.setInterval(50)
    page.show()
    qtbot.waitExposed(page)
    make_run(root, "from-elsewhere", steps=1, age_s=-60)
    qtbot.waitUntil(lambda: "from-elsewhere" in names(page), timeout=3000)
    page.hide()
    assert not page.timer.isActive()


def test_choosing_another_folder_persists_it(page, state, tmp_path):
    other = tmp_path / "elsewhere"
    make_run(other, "only-here")
    page.choose_folder = lambda start: other
    page.choose_button.click()
    assert state.runs_root == other and names(page) == ["only-here"]
    page.choose_folder = lambda start: None  # the dialog was cancelled
    page.choose_button.click()
    assert state.runs_root == other


def test_an_empty_folder_says_what_to_do(qtbot, state, tmp_path):
    state.set_runs_root(tmp_path / "nothing-here")
    page = RunsPage(state)
    qtbot.addWidget(page)
    assert page.model.rowCount() == 0 and "No runs in" in page.empty_label.text()
    assert not page.delete_button.isEnabled() and not page.train_button.isEnabled()


def test_open_folder_asks_the_desktop(page, root):
    urls = []
    page.open_url = urls.append
    page.select_path(root / "new-done")
    page.open_button.click()
    assert [u.toLocalFile() for u in urls] == [str(root / "new-done")]


def test_a_resumed_history_replaces_the_steps_it_repeats():
    from planner.gui.runs.chart import Replay
    from trainer.protocol import decode

    replay = Replay()
    first = [encode("start", 0, **START)] + [step(n) for n in range(1, 6)]  # killed after step 5
    second = [encode("start", 0, **START)] + [step(n) for n in range(3, 8)]  # resumed from checkpoint-2
    replay.add(decode(line) for line in first + second)
    assert replay.steps == list(range(1, 8)) and replay.predicted == 4 * GiB and replay.on_gpu
