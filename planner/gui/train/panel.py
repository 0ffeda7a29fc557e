"""The Train page's run panel (status banner, progress with elapsed time and ETA, run facts,
controls) and the views under it (live charts, the config the trainer reads, its log).

It only formats a :class:`RunModel` (the page decides which buttons are enabled).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from planner.gui.train.charts import TrainCharts
from planner.gui.train.run_model import RunModel, fmt_duration
from planner.units import fmt_count

CRASH_TAIL = 8
"""stderr lines quoted in a crash report."""
_BOX = "padding: 6px; border-left: 4px solid {0}; background: rgba({1}, 0.12);"
BANNER = {"ok": "padding: 6px; border-left: 4px solid transparent;",
          "error": _BOX.format("#d32f2f", "211, 47, 47"), "done": _BOX.format("#59a14f", "89, 161, 79"),
          "info": _BOX.format("#4e79a7", "78, 121, 167")}
"""Banner styles: a tinted strip that reads on light and dark palettes."""
LOG_BLOCKS = 5000
"""Log pane lines kept: a chatty run can't grow the GUI's memory without bound."""
KINDS = {"failed": "error", "orphaned": "error", "completed": "done", "idle": "ok"}


class RunPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)  # trainer messages may hold < and &
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress_label = QLabel()
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextFormat(Qt.TextFormat.PlainText)
        self.start_button = QPushButton("Start")
        # never the default button, never keyboard focus: a second run is a deliberate click, not
        # the Enter or Space that finished typing a field while another run trains
        self.start_button.setAutoDefault(False)
        self.start_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.start_button.setToolTip("Launch the trainer on this config (it keeps a copy in the run directory).")
        self.stop_button = QPushButton("Stop && Save")
        self.stop_button.setToolTip("Save a resumable checkpoint, then end (within one step).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("End now without saving.")
        self.checkpoint_button = QPushButton("Save checkpoint now")
        self.checkpoint_button.setToolTip("Save a checkpoint at the end of this step and keep training.")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue this run from its last complete checkpoint (--resume).")
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.cancel_button, self.checkpoint_button,
                  self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status_label)
        layout.addLayout(progress_row)
        layout.addLayout(buttons)
        layout.addWidget(self.info_label)

    def set_banner(self, text: str, kind: str) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(BANNER[kind])

    def show_model(self, m: RunModel, log_tail: Sequence[str], keep_banner: bool = False) -> None:
        """Progress, facts and (unless a transient message such as "Stopping..." should stay) the status."""
        p = m.progress()
        self.progress.setFormat("%v / %m steps" if m.status != "idle" else "no run yet")
        if m.status == "starting" and not p.total:
            self.progress.setRange(0, 0)  # busy: the trainer is loading libraries and the model
        else:
            self.progress.setRange(0, max(p.total or 0, p.step, 1))
            self.progress.setValue(p.step)
        self.progress_label.setText(f"elapsed {fmt_duration(p.elapsed_s)} · ETA {fmt_duration(p.eta_s)}")
        self.info_label.setText(run_info(m))
        if keep_banner:
            return
        text = m.status_text()
        if m.status == "failed" and m.error and m.error.get("hint"):
            text += f"\nHint: {m.error['hint']}"
        if m.status == "orphaned" and m.exit_code is not None and log_tail:
            text += "\nLast log lines:\n" + "\n".join(list(log_tail)[-CRASH_TAIL:])
        self.set_banner(text, KINDS.get(m.status, "info"))


def run_info(m: RunModel) -> str:
    """One line from the start event: model, method, trained parameters, device, data."""
    s = m.start
    if not s:
        return ""
    parts = [f"{s.get('model')}", f"{s.get('method')}",
             f"{fmt_count(int(s.get('params_trainable') or 0))} of {fmt_count(int(s.get('params_total') or 0))} "
             "params trained"]
    if s.get("device"):
        parts.append(f"{s.get('device')} {s.get('precision') or ''}".strip())
    if s.get("data_format"):
        parts.append(f"{s.get('data_format')} data, {s.get('examples')} examples")
    if s.get("resumed_from"):
        parts.append(f"resumed from {Path(str(s['resumed_from'])).name}")
    return " · ".join(parts)


class RunViews(QSplitter):
    """Live charts above; the exact config JSON the trainer reads, and its log, in tabs below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.charts = TrainCharts()
        self.config_preview = QPlainTextEdit()
        self.config_preview.setReadOnly(True)
        self.config_preview.setToolTip("The exact JSON the trainer reads (written next to the run directory).")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_BLOCKS)
        self.log_view.setPlaceholderText("The trainer's log (stderr) appears here.")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.config_preview, "Config JSON")
        self.tabs.addTab(self.log_view, "Log")
        self.addWidget(self.charts)
        self.addWidget(self.tabs)
        self.setStretchFactor(0, 3)
        self.setStretchFactor(1, 1)
        self.setSizes([520, 200])  # the JSON preview readable without dragging the handle
