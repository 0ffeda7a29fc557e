"""The Hardware page (placeholder until its issue lands)."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from planner.gui.placeholder import PlaceholderPage
from planner.gui.state import AppState


class HardwarePage(PlaceholderPage):
    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__("Hardware page: coming next", parent)
        self.state = state
