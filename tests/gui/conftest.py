"""GUI tests never read or write the user's real settings: QSettings go to a temporary folder."""

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the trainer's test-only hooks (a run told to OOM at a step through its config's `extra`) in the
# trainers the GUI tests start: they inherit this environment (trainer/plugins.py)
os.environ.setdefault("FINETUNE_TRAINER_PLUGIN",
                      f"{Path(__file__).resolve().parents[1] / 'trainer' / 'trainer_test_hooks.py'}:callbacks")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("FINETUNE_PLANNER_SETTINGS", str(tmp_path / "planner-settings.json"))
    yield


@pytest.fixture
def train_page(qtbot, tmp_path):
    """A Train page over a private runs folder; a trainer still running at the end is killed."""
    from planner.gui.state import AppState
    from planner.gui.train.page import TrainPage

    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(tmp_path / "runs")
    page = TrainPage(state)
    qtbot.addWidget(page)
    yield page
    if page.is_running():  # a failed test must not leave a trainer behind
        with qtbot.waitSignal(page.process.finished, timeout=10_000):
            page.process.kill()
