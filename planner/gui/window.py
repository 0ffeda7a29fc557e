"""The main window: one tab per page, in the order of the workflow (GPU -> plan -> train -> runs -> try)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QMainWindow, QTabWidget, QWidget

from planner.gui.hardware.page import HardwarePage
from planner.gui.plan.page import PlanPage
from planner.gui.runs.page import RunsPage
from planner.gui.state import AppState
from planner.gui.train.page import TrainPage
from planner.gui.tryout.page import TryPage


@dataclass(frozen=True)
class PageSpec:
    key: str
    """The name ``python -m planner gui --page`` takes."""
    title: str
    factory: Callable[[AppState], QWidget]
    """Builds the page around the shared state."""


PAGES: tuple[PageSpec, ...] = (
    PageSpec("hardware", "Hardware", HardwarePage),
    PageSpec("plan", "Plan", PlanPage),
    PageSpec("train", "Train", TrainPage),
    PageSpec("runs", "Runs", RunsPage),
    PageSpec("try", "Try", TryPage),
)
PAGE_KEYS: tuple[str, ...] = tuple(p.key for p in PAGES)


class MainWindow(QMainWindow):
    def __init__(self, page: str = "plan", state: AppState | None = None) -> None:
        super().__init__()
        self.state = state or AppState(parent=self)
        self.persist_geometry = True
        """Off for --screenshot: a rendered picture must not change the user's window size."""
        self.setWindowTitle("Fine-Tune Planner")
        self.resize(1200, 800)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.pages: dict[str, QWidget] = {}
        for spec in PAGES:
            widget = spec.factory(self.state)
            self.pages[spec.key] = widget
            self.tabs.addTab(widget, spec.title)
        self.setCentralWidget(self.tabs)
        # Ctrl+1..5 as in browsers and IDEs; the tab tooltips advertise them.
        self.shortcuts: list[QShortcut] = []
        for index, spec in enumerate(PAGES):
            keys = QKeySequence(f"Ctrl+{index + 1}")
            shortcut = QShortcut(keys, self)
            shortcut.activated.connect(partial(self.tabs.setCurrentIndex, index))
            self.shortcuts.append(shortcut)
            self.tabs.setTabToolTip(index, f"{spec.title} ({keys.toString(QKeySequence.SequenceFormat.NativeText)})")
        self.state.page_requested.connect(self.show_page)
        geometry = self.state.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.show_page(page)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Closing while a run trains asks: stop & save, keep it running, or cancel it."""
        train = self.pages.get("train")
        if train is not None and getattr(train, "is_running", lambda: False)():
            choice = self.close_decision()
            if choice == "stay":
                event.ignore()
                return
            {"stop": train.stop_and_save, "background": train.detach, "cancel": train.cancel_run}[choice]()
        if train is not None and hasattr(train, "demo"):
            train.demo.stop()  # a half-built demo cleans up after itself rather than dying mid-write
        tryout = self.pages.get("try")
        if tryout is not None and hasattr(tryout, "shutdown"):
            tryout.shutdown()
        if self.persist_geometry:
            self.state.settings.setValue("window/geometry", self.saveGeometry())
        event.accept()

    def close_decision(self) -> str:
        """stop | background | cancel | stay. Tests replace this to answer without a dialog."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(QMessageBox.Icon.Question, "A run is training",
                          "A training run is still going. What should happen to it?", parent=self)
        buttons = {
            box.addButton("Stop && save", QMessageBox.ButtonRole.AcceptRole): "stop",
            box.addButton("Keep running in background", QMessageBox.ButtonRole.ActionRole): "background",
            box.addButton("Cancel run", QMessageBox.ButtonRole.DestructiveRole): "cancel",
            box.addButton("Don't close", QMessageBox.ButtonRole.RejectRole): "stay",
        }
        box.exec()
        return buttons.get(box.clickedButton(), "stay")

    def show_page(self, key: str) -> None:
        """Switch to a page by its ``--page`` name; KeyError for an unknown one."""
        if key not in PAGE_KEYS:
            raise KeyError(f"unknown page {key!r}; choose one of: {', '.join(PAGE_KEYS)}")
        self.tabs.setCurrentIndex(PAGE_KEYS.index(key))

    @property
    def current_page(self) -> str:
        return PAGE_KEYS[self.tabs.currentIndex()]

