"""The Try page on a real demo run: it loads the run in a generate subprocess, streams answers of
the tuned model and its base side by side, fills a prompt from the held-out examples, scores base
against tuned, stops mid-answer, shows memory predicted against measured, and says in one line
what it cannot open."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60_000


@pytest.fixture
def run_dir(demo_run: Path) -> Path:
    return demo_run


@pytest.fixture
def page(qtbot, tmp_path):
    from planner.gui.state import AppState
    from planner.gui.tryout.page import TryPage

    def end_session(page: TryPage) -> None:  # before pytest-qt closes the page: no session left behind
        if page.process.is_running():
            with qtbot.waitSignal(page.process.finished, timeout=10_000):
                page.process.kill()

    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    page = TryPage(state)
    qtbot.addWidget(page, before_close_func=end_session)
    page.show()
    return page


def loaded(qtbot, page, run_dir: Path) -> None:
    page.run_edit.setText(str(run_dir))
    page.device.setCurrentText("cpu")
    page.load()
    qtbot.waitUntil(lambda: page.send_button.isEnabled() and page.example_list.count() > 0, timeout=TIMEOUT)


def test_a_prompt_is_answered_by_tuned_and_base_side_by_side(qtbot, page, run_dir):
    loaded(qtbot, page, run_dir)
    assert page.left.name == "tuned" and page.right.name == "base" and page.right.isVisible()
    assert "Ready on cpu" in page.status.text()
    page.measure.setChecked(True)
    page.temperature.setValue(0.0)
    page.max_new.setValue(12)
    page.prompt.setPlainText("reverse: rose lion bear")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(page.left.stats.text()) and bool(page.right.stats.text()), timeout=TIMEOUT)
    left, right = page.left.transcript.toPlainText(), page.right.transcript.toPlainText()
    assert "You: reverse: rose lion bear" in left and "tuned:" in left and "base:" in right
    assert left.split("tuned:")[1].strip() != right.split("base:")[1].strip()
    assert "tokens/s" in page.left.stats.text() and "first token" in page.left.stats.text()
    # the memory chart: predicted and measured weights and answer peak, within 5% here
    predicted, measured = page.memory.values["predicted"], page.memory.values["measured"]
    assert None not in predicted and None not in measured
    for p, m in zip(predicted, measured):
        assert p == pytest.approx(m, rel=0.05)
    assert page.memory_label.text().startswith("Predicted: weights")
    # the conversation goes on in each pane: the next request carries the first turn
    assert [m["role"] for m in page.left.messages] == ["user", "assistant"]


def test_held_out_examples_fill_the_prompt_and_score_base_against_tuned(qtbot, page, run_dir):
    loaded(qtbot, page, run_dir)
    item = page.example_list.item(0)
    page._use_example(item)
    assert page.prompt.toPlainText().startswith(("reverse:", "sort:"))
    assert page.reference.text().startswith("Reference answer: ")
    qtbot.mouseClick(page.score_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "examples" in page.score_label.text(), timeout=TIMEOUT)
    lines = page.score_label.text().splitlines()
    assert lines[0].startswith("base: loss") and lines[1].startswith("tuned: loss")
    base_loss, tuned_loss = (float(line.split("loss ")[1].split(",")[0]) for line in lines[:2])
    assert tuned_loss < base_loss and "validation" in lines[-1]


def test_stop_ends_an_answer_and_the_next_one_is_not_asked(qtbot, page, run_dir):
    loaded(qtbot, page, run_dir)
    page.left.who.setCurrentText("base")  # an untrained model rambles on: it never says EOS
    page.temperature.setValue(1.0)
    page.max_new.setValue(30000)
    page.prompt.setPlainText("a")
    page.send()
    qtbot.waitUntil(lambda: page.left.transcript.toPlainText().count(":") >= 2 and page.stop_button.isEnabled(),
                    timeout=TIMEOUT)
    qtbot.wait(200)
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "(stopped)" in page.left.stats.text(), timeout=TIMEOUT)
    qtbot.wait(300)
    assert page.right.stats.text() == ""  # side by side, the second answer was never asked for
    assert page.send_button.isEnabled()


def test_what_cannot_be_opened_is_said_in_one_line(qtbot, page, tmp_path):
    page.run_edit.setText(str(tmp_path / "nothing-here"))
    page.load()
    assert "is not a folder" in page.status.text()
    empty = tmp_path / "empty"
    empty.mkdir()
    page.run_edit.setText(str(empty))
    page.load()
    qtbot.waitUntil(lambda: "Cannot try this" in page.status.text(), timeout=TIMEOUT)
    assert "adapter_config.json" in page.status.text() and "\n" not in page.status.text()


def test_loading_again_ends_the_open_session_first(qtbot, page, run_dir):
    loaded(qtbot, page, run_dir)
    first = page.process.pid
    page.other_edit.setText(f"{run_dir / 'adapter'}")  # the same adapter again, as "other"
    page.load()
    qtbot.waitUntil(lambda: page.names == ["base", "tuned", "other"] and page.send_button.isEnabled(), timeout=TIMEOUT)
    assert page.process.pid != first
