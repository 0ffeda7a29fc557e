"""GUI tests never read or write the user's real settings: QSettings go to a temporary folder."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

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
    from planner.gui.train_page import TrainPage

    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(tmp_path / "runs")
    page = TrainPage(state)
    qtbot.addWidget(page)
    yield page
    if page.is_running():  # a failed test must not leave a trainer behind
        with qtbot.waitSignal(page.process.finished, timeout=10_000):
            page.process.kill()
