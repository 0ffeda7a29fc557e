"""The Plan page: a training-setup form on the left, the memory chart and verdicts on the right.

Estimates are pure Python (well under a millisecond each), so they run on the GUI thread; a
short single-shot timer coalesces bursts of edits (typing, spin-box autorepeat) into one update.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QCompleter, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
    QSizePolicy, QSpinBox, QVBoxLayout, QWidget,
)

from planner.catalog import catalog
from planner.errors import PlannerError
from planner.gui.plan_chart import PlanChart
from planner.gui.plan_model import FormValues, Plan, compute_plan, summary_lines
from planner.gui.state import AppState
from planner.options import ATTENTIONS, METHODS, OPTIMIZERS, PRECISIONS
from planner.units import fmt_count

DEBOUNCE_MS = 30


def _combo(values: tuple[str, ...], current: str, tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(values))
    box.setCurrentText(current)
    box.setToolTip(tip)
    return box


def _spin(low: int, high: int, value: int, tip: str, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setGroupSeparatorShown(True)
    spin.setToolTip(tip)
    return spin


class PlanPage(QWidget):
    """Will it fit? Full, LoRA and QLoRA side by side for the setup in the form."""

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        d = FormValues()
        self.plan: Plan | None = None
        """The last valid result; kept on screen while the form holds an error."""

        self.model_box = self._model_box(d.model)
        self.method_box = _combo(METHODS, d.method, "Your method: outlined in the chart and bold in the "
                                 "summary. The chart always compares all four.")
        self.precision_box = _combo(PRECISIONS, d.precision, "Weight and compute dtype. *-mixed keeps fp32 "
                                    "master weights with 16-bit autocast (AMP).")
        self.optimizer_box = _combo(OPTIMIZERS, d.optimizer, "Hugging Face `optim` name. 8-bit and paged "
                                    "optimizers (bitsandbytes) shrink the optimizer states.")
        self.batch_spin = _spin(1, 1024, d.batch_size, "Micro-batch per GPU (per_device_train_batch_size).")
        self.seq_spin = _spin(1, 1_048_576, d.seq_len, "Tokens per sample after padding/packing.", step=256)
        self.lora_r_spin = _spin(1, 1024, d.lora_r, "LoRA rank r (LoRA and QLoRA bars); adapters on all "
                                 "linear layers.")
        self.ckpt_box = QCheckBox("gradient checkpointing")
        self.ckpt_box.setChecked(d.grad_checkpointing)
        self.ckpt_box.setToolTip("Recompute activations in the backward pass: far less activation "
                                 "memory for about a third more compute.")
        self.attention_box = _combo(ATTENTIONS, d.attention, "Attention kernel; eager materialises the "
                                    "seq x seq score matrix.")
        self.gpu_spin = QDoubleSpinBox()
        self.gpu_spin.setRange(1.0, 4096.0)
        self.gpu_spin.setDecimals(1)
        self.gpu_spin.setValue(d.gpu_gib)
        self.gpu_spin.setSuffix(" GiB")
        self.gpu_spin.setToolTip("Memory of your GPU (as nvidia-smi shows it): the dashed line.")

        form = QFormLayout()
        form.addRow("Model", self.model_box)
        form.addRow("Method", self.method_box)
        form.addRow("Precision", self.precision_box)
        form.addRow("Optimizer", self.optimizer_box)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Sequence length", self.seq_spin)
        form.addRow("LoRA r", self.lora_r_spin)
        form.addRow("", self.ckpt_box)
        form.addRow("Attention", self.attention_box)
        form.addRow("GPU memory", self.gpu_spin)
        group = QGroupBox("Training setup")
        group.setLayout(form)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d32f2f;")  # a foreground colour, legible on light and dark
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.stale_label = QLabel("The chart still shows the last valid setup.")
        self.stale_label.setWordWrap(True)
        self.stale_label.hide()

        left = QVBoxLayout()
        left.addWidget(group)
        left.addWidget(self.error_label)
        left.addWidget(self.stale_label)
        left.addStretch(1)
        left_widget = QWidget()
        left_widget.setLayout(left)
        left_widget.setFixedWidth(380)

        self.chart = PlanChart()
        self.summary_label = QLabel()
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        right = QVBoxLayout()
        right.addWidget(self.chart, 1)
        right.addWidget(self.summary_label)

        layout = QHBoxLayout(self)
        layout.addWidget(left_widget)
        layout.addLayout(right, 1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.recompute)
        self.model_box.editTextChanged.connect(self._schedule)
        for box in (self.method_box, self.precision_box, self.optimizer_box, self.attention_box):
            box.currentIndexChanged.connect(self._schedule)
        for spin in (self.batch_spin, self.seq_spin, self.lora_r_spin, self.gpu_spin):
            spin.valueChanged.connect(self._schedule)
        self.ckpt_box.toggled.connect(self._schedule)
        self.recompute()  # draw the defaults at once, so the first frame (and a screenshot) has bars

    def _model_box(self, current: str) -> QComboBox:
        ids = sorted(catalog(), key=str.lower)
        box = QComboBox()
        box.setEditable(True)
        box.addItems(ids)
        box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        box.setCurrentText(current)
        box.setMinimumContentsLength(24)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        # "llama-3" should find meta-llama/Llama-3.1-8B: substring, any case.
        completer = QCompleter(ids, box)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        box.setCompleter(completer)
        box.setToolTip("A catalog id (type any part of it), a model folder, or a config.json path.")
        return box

    def values(self) -> FormValues:
        return FormValues(
            model=self.model_box.currentText(), method=self.method_box.currentText(),
            precision=self.precision_box.currentText(), optimizer=self.optimizer_box.currentText(),
            batch_size=self.batch_spin.value(), seq_len=self.seq_spin.value(),
            lora_r=self.lora_r_spin.value(), grad_checkpointing=self.ckpt_box.isChecked(),
            attention=self.attention_box.currentText(), gpu_gib=self.gpu_spin.value(),
        )

    def _schedule(self, *_: object) -> None:
        self._debounce.start()  # restarts a pending countdown: one recompute per burst

    def recompute(self) -> None:
        values = self.values()
        try:
            plan = compute_plan(values)
        except PlannerError as exc:
            # Bad input is the user's to fix: say so and leave the last valid chart in place.
            self.error_label.setText(str(exc))
            self.stale_label.setVisible(self.plan is not None)
            return
        self.error_label.clear()
        self.stale_label.hide()
        self.plan = plan
        highlight = tuple(m == values.method for m in plan.methods)
        title = (f"{plan.model} · {fmt_count(plan.params_total)} params · "
                 f"batch {values.batch_size} × {values.seq_len:,} tokens")
        self.chart.show_plan(plan, highlight, values.gpu_gib, html.escape(title))
        self.summary_label.setText(self._summary_html(plan, highlight, values.gpu_gib))

    @staticmethod
    def _summary_html(plan: Plan, highlight: tuple[bool, ...], gpu_gib: float) -> str:
        # A table so the numbers line up; "label: rest" lines come from the Qt-free model.
        rows = []
        for line, mine in zip(summary_lines(plan, gpu_gib), highlight):
            label, rest = (html.escape(part) for part in line.split(": ", 1))
            if mine:
                label, rest = f"<b>{label}</b>", f"<b>{rest}</b>"
            rows.append(f"<tr><td>{label}</td><td style='padding-left:12px'>{rest}</td></tr>")
        note = ("<i>device used = what nvidia-smi shows: peak reserved by PyTorch + CUDA context. "
                "Bold: your method.</i>")
        return f"<table cellspacing='1'>{''.join(rows)}</table>{note}"
