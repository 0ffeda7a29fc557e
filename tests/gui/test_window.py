"""The window: closing while a run trains asks first; geometry persists."""

import pytest
from PySide6.QtCore import QSettings

from planner.gui.state import AppState
from planner.gui.window import MainWindow


class FakeTrain:
    """Stands in for the Train page's run controls."""

    def __init__(self):
        self.calls = []
        self.running = True

    def is_running(self):
        return self.running

    def stop_and_save(self):
        self.calls.append("stop")

    def detach(self):
        self.calls.append("background")

    def cancel_run(self):
        self.calls.append("cancel")


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(state=AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(w)
    return w


@pytest.mark.parametrize("choice", ["stop", "background", "cancel"])
def test_close_while_training_runs_the_choice(window, choice):
    fake = FakeTrain()
    window.pages["train"] = fake
    window.close_decision = lambda: choice
    window.show()
    assert window.close()
    assert fake.calls == [choice]


def test_close_can_be_refused(window):
    fake = FakeTrain()
    window.pages["train"] = fake
    window.close_decision = lambda: "stay"
    window.show()
    assert not window.close()
    assert fake.calls == [] and window.isVisible()
    fake.running = False
    assert window.close()


def test_geometry_is_remembered(qtbot, tmp_path, monkeypatch):
    settings = QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat)
    first = MainWindow(state=AppState(settings))
    qtbot.addWidget(first)
    first.show()
    first.close()
    saved = settings.value("window/geometry")
    assert saved is not None and len(bytes(saved)) > 0
    restored = []
    monkeypatch.setattr(MainWindow, "restoreGeometry", lambda self, g: restored.append(bytes(g)) or True)
    again = MainWindow(state=AppState(settings))
    qtbot.addWidget(again)
    assert restored == [bytes(saved)]
