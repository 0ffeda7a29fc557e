"""The Train page's form: source (model, dataset, run directory) and the knobs that matter most.

It reads widgets into TrainConfig field values on top of a *base* (the demo's run.json, a plan
from the Plan page, an opened run's config), so fields the form does not show are kept, not
reset; they are all in the config preview beside the form. Two never ride along unseen: test
hooks (``extra``) are dropped, and ``trust_remote_code`` has its own checkbox, off unless the
config that filled the form turned it on, and off again whenever the model changes. Validation is :func:`planner.gui.train.fields.validate`; its message appears under the
field it names.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
    QPushButton, QVBoxLayout, QWidget,
)

from planner.gui.common.number_box import StrictSpinBox
from planner.gui.train.devices import DevicesBox
from planner.gui.train.fields import FieldError, parse_number, peek_dataset
from planner.gui.train.gpus import GpuOption, num_processes
from planner.options import METHODS, QUANTS

DEMO_ARCHS = (("Llama (dense)", "llama"), ("Mixtral (MoE)", "mixtral"))
"""``make-demo --arch`` choices the form offers (the command has the other MoE kinds too)."""
ERROR_STYLE = "color: #d32f2f;"  # as the Plan page: legible on light and dark palettes

DEFAULTS: dict[str, Any] = {
    "method": "qlora", "quant": "nf4", "learning_rate": 2e-4, "batch_size": 1, "gradient_accumulation_steps": 1,
    "max_steps": -1, "epochs": 1.0, "max_seq_len": 2048, "lora_r": 16, "grad_checkpointing": True,
    "sharding": "ddp",
}
"""TrainConfig's defaults for the fields on the form. Not num_processes: every GPU starts checked."""
NOT_CARRIED = ("extra", "trust_remote_code")
"""Never kept in the base: test hooks are not the app's to pass on, and running a model's own code
is decided by the checkbox the user sees."""


def _spin(low: int, high: int, tip: str, special: str | None = None) -> StrictSpinBox:
    spin = StrictSpinBox()
    spin.setRange(low, high)
    spin.setGroupSeparatorShown(True)
    spin.setToolTip(tip)
    if special:
        spin.setSpecialValueText(special)  # shown at the minimum, e.g. max_steps -1
    return spin


class TrainForm(QWidget):
    changed = Signal()
    """Any field changed (by the user or by set_fields)."""
    output_edited = Signal()
    """The user typed a run directory: the page stops generating one."""

    def __init__(self, gpus: Sequence[GpuOption] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.base: dict[str, Any] = {}
        self.devices = DevicesBox(gpus, ERROR_STYLE)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("local model folder or Hub id")
        self.model_edit.setToolTip("A folder with config.json and weights, or a Hugging Face Hub id "
                                   "(used if cached locally or online).")
        self.model_browse = QPushButton("Browse...")
        self.trust_box = QCheckBox("run the model's own code (trust_remote_code)")
        self.trust_box.setToolTip("Lets Python files shipped in the model folder run in the trainer. Only for a "
                                  "model whose author you trust; turned off whenever the model changes.")
        self.demo_button = QPushButton("Make demo model")
        self.demo_button.setToolTip("Build a tiny offline model, tokenizer and dataset (python -m trainer "
                                    "make-demo) and fill the form with its ready config: trains on a CPU.")
        self.demo_arch = QComboBox()
        for label, arch in DEMO_ARCHS:
            self.demo_arch.addItem(label, arch)
        self.demo_arch.setToolTip("The demo's architecture: a dense Llama, or a Mixtral-style mixture of "
                                  "experts (4 experts, 2 per token), trained expert by expert like the real one.")
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText(".jsonl, .json, .csv or .parquet")
        self.dataset_browse = QPushButton("Browse...")
        self.format_label = QLabel()
        self.format_label.setWordWrap(True)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setPlaceholderText("The first three examples appear here.")
        self.preview.setFixedHeight(96)
        self.preview.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.output_edit = QLineEdit()
        self.output_edit.setToolTip("The run directory: config, metrics.jsonl, checkpoints, adapter.")
        self.output_new = QPushButton("New")
        self.output_new.setToolTip("A fresh, unique run directory under the runs folder.")

        self.method_box = QComboBox()
        self.method_box.addItems(list(METHODS))
        self.method_box.setToolTip("full: every weight; lora: adapters on a 16-bit base; qlora: on a quantized base.")
        self.quant_box = QComboBox()
        self.quant_box.addItems(list(QUANTS))
        self.quant_box.setToolTip("QLoRA base format (bitsandbytes).")
        self.lr_edit = QLineEdit()
        self.lr_edit.setToolTip("Peak learning rate, e.g. 2e-4 (LoRA) or 2e-5 (full).")
        self.batch_spin = _spin(1, 4096, "Micro-batch per device (per_device_train_batch_size).")
        self.accum_spin = _spin(1, 4096, "Gradient accumulation steps: global batch = micro-batch × this.")
        self.steps_spin = _spin(-1, 10_000_000, "Optimizer steps; -1 trains for the epochs instead.",
                                special="use epochs")
        self.epochs_edit = QLineEdit()
        self.epochs_edit.setToolTip("Passes over the data (used when max steps is -1).")
        self.seq_spin = _spin(1, 1_048_576, "Longest sample in tokens; longer ones are truncated.")
        self.seq_spin.setSingleStep(256)
        self.lora_r_spin = _spin(1, 1024, "LoRA rank r (lora and qlora).")
        self.ckpt_box = QCheckBox("gradient checkpointing")
        self.ckpt_box.setToolTip("Recompute activations in the backward pass: far less memory, ~30% slower.")

        # TrainConfig field name -> the error label under its widget
        self.errors: dict[str, QLabel] = {}
        source = QGroupBox("Source")
        sf = QFormLayout(source)
        sf.addRow("Model", self._with_error("model", self._row(self.model_edit, self.model_browse)))
        sf.addRow("", self._with_error("trust_remote_code", self.trust_box))
        sf.addRow("", self._row(self.demo_button, self.demo_arch))
        sf.addRow("Dataset", self._with_error("dataset", self._row(self.dataset_edit, self.dataset_browse)))
        sf.addRow("Format", self.format_label)
        sf.addRow("Preview", self.preview)
        sf.addRow("Run dir", self._with_error("output_dir", self._row(self.output_edit, self.output_new)))
        knobs = QGroupBox("Training")
        kf = QFormLayout(knobs)
        for label, name, widget in (
            ("Method", "method", self.method_box), ("Quant", "quant", self.quant_box),
            ("Learning rate", "learning_rate", self.lr_edit), ("Batch size", "batch_size", self.batch_spin),
            ("Grad accumulation", "gradient_accumulation_steps", self.accum_spin),
            ("Max steps", "max_steps", self.steps_spin), ("Epochs", "epochs", self.epochs_edit),
            ("Max seq len", "max_seq_len", self.seq_spin), ("LoRA r", "lora_r", self.lora_r_spin),
            ("", "grad_checkpointing", self.ckpt_box),
        ):
            kf.addRow(label, self._with_error(name, widget))
        self.general_error = QLabel()
        self.general_error.setStyleSheet(ERROR_STYLE)
        self.general_error.setWordWrap(True)
        self.general_error.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(source)
        layout.addWidget(self.devices)
        layout.addWidget(knobs)
        layout.addWidget(self.general_error)
        layout.addStretch(1)

        self.set_fields(DEFAULTS)
        for edit in (self.model_edit, self.dataset_edit, self.output_edit, self.lr_edit, self.epochs_edit):
            edit.textChanged.connect(self.changed)
        for box in (self.method_box, self.quant_box):
            box.currentTextChanged.connect(self.changed)
        for spin in self._numbers().values():
            spin.valueChanged.connect(self.changed)
            spin.lineEdit().textEdited.connect(self.changed)  # a refused entry is said at once
        self.ckpt_box.toggled.connect(self.changed)
        self.trust_box.toggled.connect(self.changed)
        self.model_edit.textEdited.connect(lambda _text: self.trust_box.setChecked(False))
        self.devices.changed.connect(self.changed)
        self.method_box.currentTextChanged.connect(self._method_changed)
        self.dataset_edit.textChanged.connect(self.refresh_preview)
        self.output_edit.textEdited.connect(self.output_edited)
        self.model_browse.clicked.connect(self._browse_model)
        self.dataset_browse.clicked.connect(self._browse_dataset)
        self.refresh_preview()

    # -- layout helpers ----------------------------------------------------------------------------
    @staticmethod
    def _row(*widgets: QWidget) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        for i, w in enumerate(widgets):
            row.addWidget(w, 1 if i == 0 else 0)
        return box

    def _with_error(self, name: str, widget: QWidget) -> QWidget:
        label = QLabel()
        label.setStyleSheet(ERROR_STYLE)
        label.setWordWrap(True)
        label.hide()
        self.errors[name] = label
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        col.addWidget(widget)
        col.addWidget(label)
        return box

    def _numbers(self) -> dict[str, StrictSpinBox]:
        return {"batch_size": self.batch_spin, "gradient_accumulation_steps": self.accum_spin,
                "max_steps": self.steps_spin, "max_seq_len": self.seq_spin, "lora_r": self.lora_r_spin}

    def input_problem(self) -> FieldError | None:
        """A number box whose text is not a value ("4k"): said beside it, never read as another number."""
        for name, spin in self._numbers().items():
            if (problem := spin.problem()) is not None:
                return FieldError(name, f"{name}: {problem}")
        return None

    # -- values ------------------------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        """TrainConfig field values: the base overlaid with the widgets (raw text where unparsable)."""
        # the source first, in TrainConfig's order, so the preview reads like the trainer's config.json
        out: dict[str, Any] = {"model": self.model_edit.text().strip(), "dataset": self.dataset_edit.text().strip(),
                               "output_dir": self.output_edit.text().strip()}
        out.update((k, v) for k, v in self.base.items() if k not in out)
        out.update(
            method=self.method_box.currentText(),
            quant=self.quant_box.currentText(), learning_rate=parse_number(self.lr_edit.text()),
            batch_size=self.batch_spin.value(), gradient_accumulation_steps=self.accum_spin.value(),
            max_steps=self.steps_spin.value(), epochs=parse_number(self.epochs_edit.text()),
            max_seq_len=self.seq_spin.value(), lora_r=self.lora_r_spin.value(),
            grad_checkpointing=self.ckpt_box.isChecked(), trust_remote_code=self.trust_box.isChecked(),
            num_processes=num_processes(self.devices.chosen()), sharding=self.devices.sharding(),
        )
        return out

    def set_fields(self, values: dict[str, Any]) -> None:
        """Fill the form (a plan, the demo, an opened run); unknown-to-the-form fields join the base."""
        self.base.update((k, v) for k, v in values.items() if k not in NOT_CARRIED)
        widgets = (self.trust_box, self.model_edit, self.dataset_edit, self.output_edit, self.lr_edit, self.epochs_edit,
                   self.method_box, self.quant_box, self.batch_spin, self.accum_spin, self.steps_spin,
                   self.seq_spin, self.lora_r_spin, self.ckpt_box, self.devices)
        for w in widgets:
            w.blockSignals(True)  # one `changed` for the lot, not fourteen
        try:
            for key, edit in (("model", self.model_edit), ("dataset", self.dataset_edit),
                              ("output_dir", self.output_edit)):
                if key in values:
                    edit.setText(str(values[key]))
            for key, edit in (("learning_rate", self.lr_edit), ("epochs", self.epochs_edit)):
                if key in values:
                    edit.setText(f"{values[key]:g}" if isinstance(values[key], (int, float)) else str(values[key]))
            for key, box in (("method", self.method_box), ("quant", self.quant_box)):
                if key in values and box.findText(str(values[key])) >= 0:
                    box.setCurrentText(str(values[key]))
            for key, spin in (("batch_size", self.batch_spin), ("gradient_accumulation_steps", self.accum_spin),
                              ("max_steps", self.steps_spin), ("max_seq_len", self.seq_spin),
                              ("lora_r", self.lora_r_spin)):
                if isinstance(values.get(key), int):
                    spin.setValue(values[key])
            if "model" in values or "trust_remote_code" in values:  # a new model starts distrusted
                self.trust_box.setChecked(values.get("trust_remote_code") is True)
            if isinstance(values.get("grad_checkpointing"), bool):
                self.ckpt_box.setChecked(values["grad_checkpointing"])
            processes = values.get("num_processes")
            if isinstance(processes, int) and not isinstance(processes, bool):
                self.devices.choose_count(processes)
            if "sharding" in values:
                self.devices.set_sharding(str(values["sharding"]))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._method_changed(self.method_box.currentText())
        self.refresh_preview()
        self.changed.emit()

    def show_error(self, error: FieldError | None) -> None:
        """Show the message under its field (or below the form); None clears every message."""
        for label in (*self.errors.values(), self.general_error):
            label.hide()
        if error is None:
            return
        label = self.errors.get(error.field, self.general_error)
        label.setText(error.message)
        label.show()

    def shown_error(self) -> str:
        """The message on screen, "" when none (what tests read back)."""
        for label in (*self.errors.values(), self.general_error, self.devices.error_label):
            if not label.isHidden():
                return label.text()
        return ""

    # -- reactions -----------------------------------------------------------------------------------
    def _method_changed(self, method: str) -> None:
        self.quant_box.setEnabled(method == "qlora")
        self.lora_r_spin.setEnabled(method != "full")

    def refresh_preview(self) -> None:
        peek = peek_dataset(self.dataset_edit.text())
        self.format_label.setText(peek.format or f"<i>{html.escape(peek.note)}</i>")
        self.preview.setPlainText("\n\n".join(f"#{i + 1}  {ex}" for i, ex in enumerate(peek.examples)))

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.model_edit.text() or str(Path.home()))
        if folder:
            self.trust_box.setChecked(False)
            self.model_edit.setText(folder)

    def _browse_dataset(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Dataset", self.dataset_edit.text() or str(Path.home()),
                                              "Datasets (*.jsonl *.json *.csv *.parquet);;All files (*)")
        if path:
            self.dataset_edit.setText(path)
