"""The Runs page's "Export model": both ways to export a run, each with its cost (planner/exporting.py),
then ``python -m trainer export`` in a child process (the GUI never imports torch).

Shown with ``open()`` (window-modal, returns at once): the event loop keeps running, so the
export's output arrives and tests can click the buttons.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QProcess, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from planner.exporting import ExportChoice, export_choices
from planner.gui.common.run_process import trainer_environment
from planner.units import GiB, MiB, fmt_bytes


def describe(choice: ExportChoice) -> str:
    n = choice.disk_bytes
    disk = "the base model's size" if n is None else fmt_bytes(n, MiB, 1) if n < GiB else fmt_bytes(n)
    text = f"On disk: {disk}\nLoading: {choice.loading}\nPer generated token: {choice.per_token}"
    return text + (f"\nNot available: {choice.unavailable}" if choice.unavailable else "")


def default_out(run_dir: Path, merge: bool) -> Path:
    """A new folder beside the run: ``<run>-merged`` or ``<run>-adapter`` (``-2``... if taken)."""
    base = run_dir.parent / f"{run_dir.name}-{'merged' if merge else 'adapter'}"
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


class ExportDialog(QDialog):
    exported = Signal(str)
    """The folder written, once the export succeeded."""

    def __init__(self, run_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir = run_dir
        self.setWindowTitle(f"Export {run_dir.name}")
        self.setMinimumWidth(620)
        self.choices = export_choices(run_dir)  # PlannerError: the caller says why, no dialog
        self.group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        layout.setSizeConstraint(QVBoxLayout.SizeConstraint.SetMinimumSize)  # wrapped labels keep their height
        layout.addWidget(QLabel("Write the trained model to a new folder, with a model card (README.md, loss.svg):"))
        self.buttons: list[QRadioButton] = []
        for i, choice in enumerate(self.choices):
            button = QRadioButton(choice.title[0].upper() + choice.title[1:])
            button.setEnabled(choice.unavailable is None)
            details = QLabel(describe(choice))
            details.setWordWrap(True)
            details.setIndent(24)
            self.group.addButton(button, i)
            self.buttons.append(button)
            layout.addWidget(button)
            layout.addWidget(details)
        self.buttons[0].setChecked(True)
        self.out_edit = QLineEdit(str(default_out(run_dir, False)))
        self.out_edit.setToolTip("A new or empty folder: an export never replaces anything else.")
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose)
        row = QHBoxLayout()
        row.addWidget(QLabel("Folder"))
        row.addWidget(self.out_edit, 1)
        row.addWidget(choose)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        self.group.idToggled.connect(self._choice_changed)
        self.process: QProcess | None = None
        self._auto_out = True

    @property
    def merge(self) -> bool:
        return self.choices[self.group.checkedId()].merge

    def _choice_changed(self, _id: int, checked: bool) -> None:
        if checked and self._auto_out and self.out_edit.text() == str(default_out(self.run_dir, not self.merge)):
            self.out_edit.setText(str(default_out(self.run_dir, self.merge)))

    def _choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export into (a new or empty folder)", str(self.run_dir.parent))
        if path:
            self._auto_out = False
            self.out_edit.setText(path)

    def start(self) -> None:
        """``python -m trainer export`` for the checked choice; its one-line error shows here."""
        if self.process is not None or not self.out_edit.text().strip():
            return
        args = ["-m", "trainer", "export", "--run", str(self.run_dir), "--out", self.out_edit.text().strip()]
        if self.merge:
            args.append("--merge")
        proc = QProcess(self)
        proc.setProcessEnvironment(trainer_environment({}))
        proc.finished.connect(self._finished)
        self.process = proc
        self.export_button.setEnabled(False)
        self.status.setText("Exporting…")
        proc.start(sys.executable, args)

    def _finished(self, code: int, _status: object) -> None:
        proc, self.process = self.process, None
        self.export_button.setEnabled(True)
        if proc is None:
            return
        err = bytes(proc.readAllStandardError().data()).decode(errors="replace").strip().splitlines()
        if code == 0:
            out = str(Path(self.out_edit.text().strip()).expanduser().resolve())
            self.status.setText(f"Written to {out} (model card: README.md).")
            self.exported.emit(out)
        else:
            self.status.setText(err[-1] if err else f"the export failed (exit {code})")

    def done(self, result: int) -> None:
        if self.process is not None:  # closing mid-export stops it: the folder appears whole or not at all
            self.process.kill()
            self.process.waitForFinished(2000)
        super().done(result)
