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


def test_screenshot_waits_for_the_recommendation(qapp, tmp_path, monkeypatch):
    """`gui --screenshot` pictures the Plan page once its recommendation is in, not "Computing..."."""
    from planner.gui import app as app_module

    seen = []

    class Recording(MainWindow):
        def grab(self, *args):
            page = self.pages["plan"]
            seen.append((page.recommendation.text.toPlainText(), app_module.settled(self)))
            return super().grab(*args)

    monkeypatch.setattr(app_module, "MainWindow", Recording)
    out = tmp_path / "plan.png"
    assert app_module.run(page="plan", screenshot=str(out)) == 0
    assert out.stat().st_size > 0
    [(text, settled)] = seen
    assert settled and text.strip() and not text.startswith("Computing")
    assert "GiB" in text  # the recommendation's numbers


def test_settle_gives_up_after_its_timeout(qtbot, tmp_path):
    from PySide6.QtCore import QTimer

    from planner.gui.app import settle, settled

    w = MainWindow(state=AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(w)
    assert settle(w)
    pending = QTimer(w)
    pending.setSingleShot(True)
    pending.start(60_000)  # a debounce that will not fire during the test
    assert not settled(w) and not settle(w, timeout_s=0.05)
    pending.stop()
    assert settled(w)
