"""The Plan page's "Precise check": precise mode run in a child process, never in the app.

Precise mode imports torch, which the GUI process never does; ``python -m planner simulate
--json`` runs in a QProcess, so the window stays responsive and Cancel simply kills it.
"""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import QElapsedTimer, QProcess, Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from planner.batch_shape import longest_run
from planner.cli_options import setup_args
from planner.gui.plan.model import CategoryRow, FormValues, compare_categories, largest_difference, my_setup
from planner.memory import Estimate
from planner.options import TrainSetup
from planner.units import GiB

COLUMNS = ("simulated GiB", "analytic GiB", "difference GiB", "difference %")
ROW_TIPS = {
    "parameters": "Weights, quantization state and adapters.",
    "gradients": "Gradients of the trainable parameters.",
    "optimizer state": "The optimizer's persistent state (AdamW: two moments per trainable parameter).",
    "activations and temporaries": "Analytic: saved activations, the logits and loss buffers, and workspaces.\n"
                                   "Simulated: everything else live at the peak (what the forward saved for "
                                   "backward, gradients in flight, kernel transients).",
    "peak allocated": "torch.cuda.max_memory_allocated: the sum of the rows above.",
}


def simulate_args(values: FormValues, setup: TrainSetup | None = None) -> list[str]:
    """The form as ``python -m planner simulate`` options: ``setup``, the very one the analytic
    estimate planned, else the form's; at its longest micro-batch, as the estimate plans memory
    (the data's longest example when a data file says it is shorter)."""
    return ["-m", "planner", "simulate", "--model", values.model,
            *setup_args(longest_run(setup or my_setup(values))), "--json"]


class PrecisePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: FormValues | None = None
        self.analytic: Estimate | None = None
        self.rows: tuple[CategoryRow, ...] = ()
        """The last successful comparison, as the table shows it (the total last)."""
        self.run_button = QPushButton("Run precise check")
        self.run_button.setToolTip("Run one real training step of this model on the meta device (transformers, "
                                   "peft, torch) and compare its peak with the analytic estimate. Takes a few "
                                   "seconds; needs no GPU and no weights.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.hide()
        self.result = QLabel("Not run yet.")
        self.result.setWordWrap(True)
        self.result.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        # Nothing scrolls: the page's splitter gives the tab the room the table needs once it shows.
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        layout.addWidget(self.result, 1)
        self.process = QProcess(self)
        self.process.finished.connect(self._finished)
        self.elapsed = QElapsedTimer()
        self.ticker = QTimer(self)  # the child prints nothing until it is done: count the seconds instead
        self.ticker.setInterval(1000)
        self.ticker.timeout.connect(self._show_progress)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    def set_plan(self, values: FormValues, analytic: Estimate) -> None:
        """The form changed: an earlier result no longer describes it."""
        if values != self.values and self.process.state() == QProcess.ProcessState.NotRunning:
            self._show_message("Not run for this setup yet.")
        self.values, self.analytic = values, analytic

    def start(self) -> None:
        if self.values is None or self.analytic is None or self.process.state() != QProcess.ProcessState.NotRunning:
            return
        self._ran_for = (self.values, self.analytic)
        self.elapsed.start()
        self._show_progress()
        self.ticker.start()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.process.start(sys.executable, simulate_args(self.values, self.analytic.setup))

    def cancel(self) -> None:
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()

    def _show_progress(self) -> None:
        self._show_message(f"Simulating one training step on the meta device (importing torch takes a few "
                           f"seconds)... {self.elapsed.elapsed() // 1000} s")

    def _show_message(self, text: str) -> None:
        self.rows = ()
        self.table.hide()
        self.result.setText(text)

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self.ticker.stop()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        out = bytes(self.process.readAllStandardOutput().data()).decode(errors="replace")
        err = bytes(self.process.readAllStandardError().data()).decode(errors="replace")
        if status != QProcess.ExitStatus.NormalExit:
            self._show_message("Cancelled.")
            return
        if code != 0:
            lines = [line for line in err.splitlines() if line.startswith("error:")] or err.strip().splitlines()[-1:]
            self._show_message(lines[0] if lines else f"precise mode failed (exit code {code})")
            return
        doc = json.loads(out)
        _, analytic = self._ran_for
        self.rows = compare_categories(doc["categories"], doc["peak_allocated_bytes"], analytic)
        self._show_table(self.rows)
        phases = ", ".join(f"{name} {value / GiB:.2f}" for name, value in doc["phase_peaks"].items())
        self.result.setText(
            f"{largest_difference(self.rows)}\n"
            f"Simulated peak allocated per phase, GiB: {phases}.\n"
            f"Device used (simulated peak + allocator + CUDA context): {doc['device_used_bytes'] / GiB:.2f} GiB.")

    def _show_table(self, rows: tuple[CategoryRow, ...]) -> None:
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels([row.label for row in rows])
        bold = QFont(self.table.font())
        bold.setBold(True)
        for r, row in enumerate(rows):
            fraction = row.difference_fraction
            cells = (f"{row.simulated_bytes / GiB:.2f}", f"{row.analytic_bytes / GiB:.2f}",
                     _signed(row.difference_bytes / GiB, ".2f"), "-" if fraction is None else _signed(fraction, ".1%"))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(ROW_TIPS[row.label])
                if r == len(rows) - 1:
                    item.setFont(bold)
                self.table.setItem(r, c, item)
        self.table.verticalHeaderItem(len(rows) - 1).setFont(bold)
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        # Exactly as big as its cells: no scroll bars, no empty band under the last row.
        frame = 2 * self.table.frameWidth()
        # (size hints, not sizes: the hidden table has not been laid out yet)
        self.table.setFixedSize(self.table.verticalHeader().sizeHint().width() + self.table.horizontalHeader().length()
                                + frame,
                                self.table.horizontalHeader().sizeHint().height() + self.table.verticalHeader().length()
                                + frame)
        self.table.show()


def _signed(value: float, spec: str) -> str:
    """``+0.29``, ``-0.26``, and ``0.00`` rather than ``-0.00`` for a difference that rounds away."""
    text = format(value, "+" + spec)
    return text[1:] if float(text.rstrip("%")) == 0 else text
