"""The out-of-memory dialog: what ran out, the trainer's computed fix, and "Apply and restart".

Shown with ``open()`` (window-modal, returns at once), never ``exec()``: the event loop keeps
running, so the trainer's last lines still arrive and tests can click the buttons.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QMessageBox, QPushButton, QWidget


def describe_changes(changes: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``batch_size: 8 → 4`` lines for the fields the fix changes."""
    return [f"{key}: {current.get(key, '?')} → {value}" for key, value in changes.items()]


class OomDialog(QMessageBox):
    apply_requested = Signal(dict)
    """The user chose "Apply and restart": these TrainConfig field changes."""

    def __init__(self, message: str, hint: str, changes: dict[str, Any] | None, current: dict[str, Any],
                 parent: QWidget | None = None) -> None:
        super().__init__(QMessageBox.Icon.Warning, "Out of memory", f"The run ran out of memory: {message}",
                         parent=parent)
        self.changes = dict(changes or {})
        lines = describe_changes(self.changes, current)
        info = f"Suggested fix: {hint}"
        if lines:
            info += "\n\nChanges:\n" + "\n".join(f"  • {line}" for line in lines)
        else:
            info += "\n\nThe trainer found no config change that fits; adjust the form by hand."
        self.setInformativeText(info)
        self.apply_button: QPushButton | None = None
        if self.changes:
            self.apply_button = self.addButton("Apply and restart", QMessageBox.ButtonRole.AcceptRole)
            self.apply_button.clicked.connect(lambda: self.apply_requested.emit(self.changes))
        self.close_button = self.addButton(QMessageBox.StandardButton.Close)
        self.setDefaultButton(self.apply_button or self.close_button)
