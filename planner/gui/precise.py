"""The Plan page's "Precise check": precise mode run in a child process, never in the app.

Precise mode imports torch, which the GUI process never does; ``python -m planner simulate
--json`` runs in a QProcess, so the window stays responsive and Cancel simply kills it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QProcess
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from planner.gui.plan_model import FormValues, my_setup
from planner.units import GiB

ROOT = Path(__file__).resolve().parents[2]


def simulate_args(values: FormValues) -> list[str]:
    """The form as ``python -m planner simulate`` options."""
    s = my_setup(values)
    args = ["-m", "planner", "simulate", "--model", values.model, "--method", s.method,
            "--precision", s.precision, "--adapter-dtype", s.adapter_dtype, "--optimizer", s.optimizer,
            "--batch-size", str(s.batch_size), "--seq-len", str(s.seq_len), "--attention", s.attention,
            "--lora-r", str(s.lora_r), "--lora-alpha", str(s.lora_alpha),
            "--lora-targets", ",".join(s.lora_targets), "--json"]
    if s.quant:
        args += ["--quant", s.quant]
    if s.modules_to_save:
        args += ["--modules-to-save", ",".join(s.modules_to_save)]
    args.append("--grad-checkpointing" if s.grad_checkpointing else "--no-grad-checkpointing")
    return args


class PrecisePanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: FormValues | None = None
        self.analytic_bytes = 0
        self.run_button = QPushButton("Run precise check")
        self.run_button.setToolTip("Run one real training step of this model on the meta device (transformers, "
                                   "peft, torch) and compare its peak with the analytic estimate. Takes a few "
                                   "seconds; needs no GPU and no weights.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.result = QLabel("Not run yet.")
        self.result.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.result, 1)
        self.process = QProcess(self)
        self.process.setWorkingDirectory(str(ROOT))
        self.process.finished.connect(self._finished)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    def set_plan(self, values: FormValues, analytic_bytes: int) -> None:
        """The form changed: an earlier result no longer describes it."""
        if values != self.values and self.process.state() == QProcess.ProcessState.NotRunning:
            self.result.setText("Not run for this setup yet.")
        self.values, self.analytic_bytes = values, analytic_bytes

    def start(self) -> None:
        if self.values is None or self.process.state() != QProcess.ProcessState.NotRunning:
            return
        self._ran_for = (self.values, self.analytic_bytes)
        self.result.setText("Simulating one training step (importing torch takes a few seconds)...")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.process.start(sys.executable, simulate_args(self.values))

    def cancel(self) -> None:
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        out = bytes(self.process.readAllStandardOutput().data()).decode(errors="replace")
        err = bytes(self.process.readAllStandardError().data()).decode(errors="replace")
        if status != QProcess.ExitStatus.NormalExit:
            self.result.setText("Cancelled.")
            return
        if code != 0:
            lines = [line for line in err.splitlines() if line.startswith("error:")] or err.strip().splitlines()[-1:]
            self.result.setText(lines[0] if lines else f"precise mode failed (exit code {code})")
            return
        doc = json.loads(out)
        _, analytic = self._ran_for
        sim = doc["peak_allocated_bytes"]
        phases = ", ".join(f"{name} {value / GiB:.2f}" for name, value in doc["phase_peaks"].items())
        diff = analytic / sim - 1 if sim else 0.0
        self.result.setText(
            f"Simulated peak allocated: {sim / GiB:.2f} GiB (per phase, GiB: {phases}).\n"
            f"Analytic estimate: {analytic / GiB:.2f} GiB, {diff:+.1%} from the simulation.\n"
            f"Device used (simulated peak + allocator + CUDA context): {doc['device_used_bytes'] / GiB:.2f} GiB.")
