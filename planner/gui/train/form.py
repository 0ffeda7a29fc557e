"""The Train page's form: source (model, dataset, run directory) and the knobs that matter most.

It reads widgets into TrainConfig field values on top of a *base* (the demo's run.json, a plan
from the Plan page, an opened run's config), so fields the form does not show are kept, not
reset; they are all in the config preview beside the form. Two never ride along unseen: test
hooks (``extra``) are dropped, and ``trust_remote_code`` has its own checkbox, off unless the
config that filled the form turned it on, and off again whenever the model changes. The fields
the form shows are one table (:mod:`planner.gui.common.binding`). Validation is
:func:`planner.gui.train.fields.validate`; its message appears under the field it names.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from planner.gui.common.binding import CHOICE, FLAG, TEXT, WHOLE, Access, Field, FieldTable, Row, error_label
from planner.gui.common.number_box import StrictSpinBox
from planner.gui.train.devices import DevicesBox
from planner.gui.train.fields import FieldError, parse_number, peek_dataset
from planner.gui.train.gpus import GpuOption, num_processes
from planner.options import METHODS, QUANTS
from trainer.config import TrainConfig

DEMO_ARCHS = (("Llama (dense)", "llama"), ("Mixtral (MoE)", "mixtral"))
"""``make-demo --arch`` choices the form offers (the command has the other MoE kinds too)."""

DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(TrainConfig)
    if f.name in ("method", "quant", "learning_rate", "batch_size", "gradient_accumulation_steps", "max_steps",
                  "epochs", "max_seq_len", "lora_r", "grad_checkpointing", "packing", "sharding")
}
"""TrainConfig's own defaults for the fields on the form (not num_processes: every GPU starts checked)."""
LEADING = ("model", "dataset", "output_dir")
"""Listed first, in TrainConfig's order, so the preview reads like the trainer's config.json."""
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


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


PATH = replace(TEXT, read=lambda w: w.text().strip())
"""A folder or file typed into a line edit."""
NUMBER_TEXT = Access(lambda w: parse_number(w.text()), lambda w, v: w.setText(_number_text(v)),
                     lambda w: (w.textChanged,))
"""A number in a line edit ("2e-4"); the raw text while it is not one (validation names it)."""
TRUST = replace(FLAG, write=lambda w, v: w.setChecked(v is True), accepts=lambda v: True)
"""Checked only by a literal true: anything else in a config leaves the model's code unrun."""
PROCESSES = Access(lambda w: num_processes(w.chosen()), lambda w, v: w.choose_count(v), lambda w: (w.changed,),
                   lambda v: isinstance(v, int) and not isinstance(v, bool))
"""The GPU box's checked GPUs, as a process count (a config's count checks its first GPUs)."""
SHARDING = Access(lambda w: w.sharding(), lambda w, v: w.set_sharding(str(v)), lambda w: (w.changed,))


class TrainForm(QWidget):
    changed = Signal()
    """Any field changed (by the user or by set_fields)."""
    output_edited = Signal()
    """The user typed a run directory: the page stops generating one."""

    def __init__(self, gpus: Sequence[GpuOption] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.base: dict[str, Any] = {}
        self.devices = DevicesBox(gpus)
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
        self.packing_box = QCheckBox("pack examples")
        self.packing_box.setToolTip("Concatenate examples into blocks of exactly the max seq len instead of padding "
                                    "each batch to its longest example: no padding computed; packed examples attend "
                                    "to each other within a block.")
        self.ckpt_box = QCheckBox("gradient checkpointing")
        self.ckpt_box.setToolTip("Recompute activations in the backward pass: far less memory, ~30% slower.")

        source: tuple[Field | Row, ...] = (
            Field("model", "Model", self.model_edit, PATH, shown=self._row(self.model_edit, self.model_browse)),
            Field("trust_remote_code", "", self.trust_box, TRUST),
            Row("", self._row(self.demo_button, self.demo_arch)),
            Field("dataset", "Dataset", self.dataset_edit, PATH,
                  shown=self._row(self.dataset_edit, self.dataset_browse)),
            Row("Format", self.format_label),
            Row("Preview", self.preview),
            Field("output_dir", "Run dir", self.output_edit, PATH, shown=self._row(self.output_edit, self.output_new)),
        )
        knobs: tuple[Field | Row, ...] = (
            Field("method", "Method", self.method_box, CHOICE),
            Field("quant", "Quant", self.quant_box, CHOICE),
            Field("learning_rate", "Learning rate", self.lr_edit, NUMBER_TEXT),
            Field("batch_size", "Batch size", self.batch_spin, WHOLE),
            Field("gradient_accumulation_steps", "Grad accumulation", self.accum_spin, WHOLE),
            Field("max_steps", "Max steps", self.steps_spin, WHOLE),
            Field("epochs", "Epochs", self.epochs_edit, NUMBER_TEXT),
            Field("max_seq_len", "Max seq len", self.seq_spin, WHOLE),
            Field("packing", "", self.packing_box, FLAG),
            Field("lora_r", "LoRA r", self.lora_r_spin, WHOLE),
            Field("grad_checkpointing", "", self.ckpt_box, FLAG),
        )
        # the GPU box is a group of its own, with its own message under the checkboxes
        gpus = (Field("num_processes", "GPUs", self.devices, PROCESSES),
                Field("sharding", "Sharding", self.devices, SHARDING))
        # TrainConfig's fields, in the order the preview lists those not in the base
        self.table = FieldTable(f for f in source + knobs + gpus if isinstance(f, Field))
        self.errors: dict[str, QLabel] = {}
        """TrainConfig field name -> the error label under its widget."""
        self.general_error = error_label()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._group("Source", source))
        layout.addWidget(self.devices)
        layout.addWidget(self._group("Training", knobs))
        layout.addWidget(self.general_error)
        layout.addStretch(1)

        self.set_fields(DEFAULTS)
        self.table.connect(self.changed)
        self.model_edit.textEdited.connect(lambda _text: self.trust_box.setChecked(False))
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

    def _group(self, title: str, rows: Sequence[Field | Row]) -> QGroupBox:
        """A titled box of rows; each field's error label sits right under its widget."""
        group = QGroupBox(title)
        form = QFormLayout(group)
        for row in rows:
            if isinstance(row, Row):
                form.addRow(row.label, row.widget)
                continue
            self.errors[row.name] = error_label()
            box = QWidget()
            col = QVBoxLayout(box)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(2)
            col.addWidget(row.shown or row.widget)
            col.addWidget(self.errors[row.name])
            form.addRow(row.label, box)
        return group

    def input_problem(self) -> FieldError | None:
        """A number box whose text is not a value ("4k"): said beside it, never read as another number."""
        if (refused := self.table.input_problem()) is None:
            return None
        field, problem = refused
        return FieldError(field.name, f"{field.name}: {problem}")

    # -- values ------------------------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        """TrainConfig field values: the base overlaid with the widgets (raw text where unparsable)."""
        shown = self.table.values()
        out = {name: shown[name] for name in LEADING}
        out.update((k, v) for k, v in self.base.items() if k not in out)
        out.update(shown)
        return out

    def set_fields(self, values: dict[str, Any]) -> None:
        """Fill the form (a plan, the demo, an opened run); unknown-to-the-form fields join the base."""
        self.base.update((k, v) for k, v in values.items() if k not in NOT_CARRIED)
        if "model" in values:  # a new model starts distrusted
            values = {"trust_remote_code": False, **values}
        with self.table.blocked():  # one `changed` for the lot, not fifteen
            self.table.set_values(values)
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
