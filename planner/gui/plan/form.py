"""The Plan page's form: every estimate option, with tooltips and errors shown beside the field.

It only reads widgets into :class:`FormValues` and writes them back (QSettings persistence);
the planner validates, and its one-line error names the option, which picks the field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QCompleter, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
    QLineEdit, QMenu, QPushButton, QWidget,
)

from planner.catalog import catalog
from planner.gui.common.number_box import StrictDoubleSpinBox, StrictSpinBox
from planner.gui.plan.model import FormValues
from planner.options import ADAPTER_DTYPES, ATTENTIONS, METHODS, OFFLOADS, OPTIMIZERS, PRECISIONS, QUANTS, SHARDINGS

ERROR_STYLE = "color: #d32f2f;"  # a foreground colour, legible on light and dark palettes


def _combo(values: tuple[str, ...], current: str, tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(values))
    box.setCurrentText(current)
    box.setToolTip(tip)
    return box


def _spin(low: int, high: int, value: int, tip: str, step: int = 1) -> StrictSpinBox:
    spin = StrictSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setGroupSeparatorShown(True)
    spin.setToolTip(tip)
    return spin


def _check(text: str, value: bool, tip: str) -> QCheckBox:
    box = QCheckBox(text)
    box.setChecked(value)
    box.setToolTip(tip)
    return box


class PlanForm(QWidget):
    changed = Signal()
    """Any field changed (the page debounces)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        d = FormValues()
        self.model_box = self._model_box(d.model)
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip("Plan a local model: its config.json, or a folder (exact counts from "
                                    "*.safetensors headers, no weights loaded).")
        menu = QMenu(self.open_button)
        menu.addAction("Model folder...", self._open_folder)
        menu.addAction("config.json...", self._open_config)
        self.open_button.setMenu(menu)
        self.method_box = _combo(METHODS, d.method, "Your method: outlined in the chart and bold in the summary. "
                                 "The chart always compares all four.")
        self.quant_box = _combo(QUANTS, d.quant, "QLoRA base format (bitsandbytes): NF4/FP4 4-bit or LLM.int8.")
        self.double_quant_box = _check("double quantization", d.double_quant,
                                       "Quantize the 4-bit block scales again: ~0.4 bits/param saved.")
        self.precision_box = _combo(PRECISIONS, d.precision, "Weight and compute dtype. *-mixed keeps fp32 "
                                    "master weights with 16-bit autocast (AMP).")
        self.adapter_box = _combo(ADAPTER_DTYPES, d.adapter_dtype, "LoRA weights' dtype (peft keeps fp32).")
        self.optimizer_box = _combo(OPTIMIZERS, d.optimizer, "Hugging Face `optim` name. 8-bit and paged "
                                    "optimizers (bitsandbytes) shrink the optimizer states.")
        self.batch_spin = _spin(1, 1024, d.batch_size, "Micro-batch per GPU (per_device_train_batch_size).")
        self.seq_spin = _spin(1, 1_048_576, d.seq_len, "Tokens per sample after padding/packing.", step=256)
        self.lora_r_spin = _spin(1, 1024, d.lora_r, "LoRA rank r (LoRA and QLoRA bars).")
        self.lora_alpha_spin = _spin(1, 4096, d.lora_alpha, "LoRA alpha (scaling; no memory effect).")
        self.targets_edit = QLineEdit(d.lora_targets)
        self.targets_edit.setToolTip("all-linear, or module names such as q_proj,v_proj.")
        self.save_edit = QLineEdit(d.modules_to_save)
        self.save_edit.setToolTip("Modules trained in full beside the adapters, e.g. embed_tokens,lm_head.")
        self.ckpt_box = _check("gradient checkpointing", d.grad_checkpointing, "Recompute activations in the "
                               "backward pass: far less activation memory for about a third more compute.")
        self.attention_box = _combo(ATTENTIONS, d.attention, "Attention kernel; eager materialises the "
                                    "seq x seq score matrix.")
        self.gpus_spin = _spin(1, 1024, d.num_gpus, "GPUs of the selected kind (memory is per GPU).")
        self.sharding_box = _combo(SHARDINGS, d.sharding, "ddp replicates; zero2 shards gradients and optimizer "
                                   "state; fsdp/zero3 also shard the weights.")
        self.offload_box = _combo(OFFLOADS, d.offload, "Move optimizer state (or also weights) to host RAM.")
        self.gpu_spin = StrictDoubleSpinBox()
        self.gpu_spin.setRange(1.0, 4096.0)
        self.gpu_spin.setDecimals(2)  # 23.99 GiB is an RTX 4090 as the driver reports it; 24.0 is not
        self.gpu_spin.setValue(d.gpu_gib)
        self.gpu_spin.setSuffix(" GiB")
        self.gpu_spin.setToolTip("Memory per GPU (as nvidia-smi shows it): the dashed line. Set by the "
                                 "Hardware page; edit it to plan for another card.")
        self.gpu_label = QLabel("RTX 4090 (catalog)")
        self.gpu_label.setWordWrap(True)  # "RTX 4090 · 24 GB datasheet, 23.99 GiB usable (catalog)" must not widen the form
        self.tokens_spin = _spin(1, 2_000_000_000, d.dataset_tokens, "Tokens in your data set (time and cost).",
                                 step=1_000_000)
        self.epochs_spin = StrictDoubleSpinBox()
        self.epochs_spin.setRange(0.01, 1000)
        self.epochs_spin.setValue(d.epochs)
        self.epochs_spin.setToolTip("Passes over the data set (time and cost).")
        self.quality_box = _check("maximum quality (prefer full fine-tuning)", d.max_quality,
                                  "The recommendation picks full fine-tuning when it fits.")

        self.layout_ = QFormLayout(self)
        self.errors: dict[QWidget, QLabel] = {}
        self.labels: dict[QWidget, str] = {}
        """Each field's label: what a message calls it (not the CLI's --option)."""
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_box, 1)
        model_row.addWidget(self.open_button)
        self._row("Model", model_row, self.model_box)
        for label, widget in (("Method", self.method_box), ("QLoRA base", self.quant_box),
                              ("", self.double_quant_box), ("Precision", self.precision_box),
                              ("Adapter dtype", self.adapter_box), ("Optimizer", self.optimizer_box),
                              ("Batch size", self.batch_spin), ("Sequence length", self.seq_spin),
                              ("LoRA r", self.lora_r_spin), ("LoRA alpha", self.lora_alpha_spin),
                              ("LoRA targets", self.targets_edit), ("Modules to save", self.save_edit),
                              ("", self.ckpt_box), ("Attention", self.attention_box), ("GPUs", self.gpus_spin),
                              ("Sharding", self.sharding_box), ("Offload", self.offload_box),
                              ("GPU", self.gpu_label), ("GPU memory", self.gpu_spin),
                              ("Data set tokens", self.tokens_spin), ("Epochs", self.epochs_spin),
                              ("", self.quality_box)):
            self._row(label, widget, widget)
        self._connect()

    # -- layout -----------------------------------------------------------------------------
    def _row(self, label: str, item, widget: QWidget) -> None:
        self.layout_.addRow(label, item)
        self.labels[widget] = label or getattr(widget, "text", lambda: "")()
        error = QLabel()
        error.setWordWrap(True)
        error.setStyleSheet(ERROR_STYLE)
        error.hide()
        self.layout_.addRow("", error)
        self.errors[widget] = error

    def _model_box(self, current: str) -> QComboBox:
        ids = sorted(catalog(), key=str.lower)
        box = QComboBox()
        box.setEditable(True)
        box.addItems(ids)
        box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        box.setCurrentText(current)
        box.setMinimumContentsLength(14)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        # "llama-3" should find meta-llama/Llama-3.1-8B: substring, any case.
        completer = QCompleter(ids, box)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        box.setCompleter(completer)
        box.setToolTip("A catalog id (type any part of it), a model folder, or a config.json path.")
        return box

    def _connect(self) -> None:
        self.model_box.editTextChanged.connect(self.changed)
        for box in (self.method_box, self.quant_box, self.precision_box, self.adapter_box, self.optimizer_box,
                    self.attention_box, self.sharding_box, self.offload_box):
            box.currentIndexChanged.connect(self.changed)
        for spin in self._numbers():
            spin.valueChanged.connect(self.changed)
            spin.lineEdit().textEdited.connect(self.changed)  # a refused entry is said at once
        for check in (self.double_quant_box, self.ckpt_box, self.quality_box):
            check.toggled.connect(self.changed)
        for edit in (self.targets_edit, self.save_edit):
            edit.textChanged.connect(self.changed)

    def _open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder (config.json, *.safetensors)")
        if path:
            self.model_box.setCurrentText(path)

    def _open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A model's config.json", "", "config (*.json);;All files (*)")
        if path:
            self.model_box.setCurrentText(path)

    # -- values -----------------------------------------------------------------------------
    def values(self) -> FormValues:
        return FormValues(
            model=self.model_box.currentText().strip(), method=self.method_box.currentText(),
            precision=self.precision_box.currentText(), optimizer=self.optimizer_box.currentText(),
            batch_size=self.batch_spin.value(), seq_len=self.seq_spin.value(), lora_r=self.lora_r_spin.value(),
            grad_checkpointing=self.ckpt_box.isChecked(), attention=self.attention_box.currentText(),
            gpu_gib=self.gpu_spin.value(), quant=self.quant_box.currentText(),
            double_quant=self.double_quant_box.isChecked(), adapter_dtype=self.adapter_box.currentText(),
            lora_alpha=self.lora_alpha_spin.value(), lora_targets=self.targets_edit.text(),
            modules_to_save=self.save_edit.text(), num_gpus=self.gpus_spin.value(),
            sharding=self.sharding_box.currentText(), offload=self.offload_box.currentText(),
            dataset_tokens=self.tokens_spin.value(), epochs=self.epochs_spin.value(),
            max_quality=self.quality_box.isChecked(),
        )

    def set_values(self, v: FormValues) -> None:
        self.model_box.setCurrentText(v.model)
        for box, value in ((self.method_box, v.method), (self.precision_box, v.precision),
                           (self.optimizer_box, v.optimizer), (self.attention_box, v.attention),
                           (self.quant_box, v.quant), (self.adapter_box, v.adapter_dtype),
                           (self.sharding_box, v.sharding), (self.offload_box, v.offload)):
            box.setCurrentText(value)
        for spin, value in ((self.batch_spin, v.batch_size), (self.seq_spin, v.seq_len),
                            (self.lora_r_spin, v.lora_r), (self.lora_alpha_spin, v.lora_alpha),
                            (self.gpus_spin, v.num_gpus), (self.tokens_spin, v.dataset_tokens),
                            (self.gpu_spin, v.gpu_gib), (self.epochs_spin, v.epochs)):
            spin.setValue(value)
        self.double_quant_box.setChecked(v.double_quant)
        self.ckpt_box.setChecked(v.grad_checkpointing)
        self.quality_box.setChecked(v.max_quality)
        self.targets_edit.setText(v.lora_targets)
        self.save_edit.setText(v.modules_to_save)

    def _numbers(self) -> tuple[StrictSpinBox | StrictDoubleSpinBox, ...]:
        return (self.batch_spin, self.seq_spin, self.lora_r_spin, self.lora_alpha_spin, self.gpus_spin,
                self.gpu_spin, self.tokens_spin, self.epochs_spin)

    def input_problem(self) -> tuple[QWidget, str] | None:
        """The first number box whose text is not a value ("Batch size: '4k' is not ..."): the form
        says so rather than planning with the number Qt would have made of it."""
        for spin in self._numbers():
            if (problem := spin.problem()) is not None:
                return spin, f"{self.labels[spin]}: {problem}"
        return None

    # -- errors -----------------------------------------------------------------------------
    def _field_for(self, message: str) -> tuple[QWidget, str]:
        """The field an error is about (the planner names its option, ``--batch-size``), and the
        message in the form's words: the field's label instead of the CLI option."""
        match = re.search(r"--([a-z-]+)", message)
        by_option = {
            "batch-size": self.batch_spin, "seq-len": self.seq_spin, "lora-r": self.lora_r_spin,
            "lora-alpha": self.lora_alpha_spin, "lora-targets": self.targets_edit, "modules-to-save": self.save_edit,
            "quant": self.quant_box, "offload": self.offload_box, "sharding": self.sharding_box,
            "num-gpus": self.gpus_spin, "optimizer": self.optimizer_box, "precision": self.precision_box,
            "gpu-memory-gib": self.gpu_spin, "epochs": self.epochs_spin, "dataset-tokens": self.tokens_spin,
            "method": self.method_box, "attention": self.attention_box, "adapter-dtype": self.adapter_box,
        }
        widget = by_option.get(match.group(1), self.model_box) if match else self.model_box
        if match and widget is not self.model_box:
            message = message.replace(match.group(0), self.labels[widget], 1)
        return widget, message

    def show_error(self, message: str | None, widget: QWidget | None = None) -> None:
        """Show ``message`` beside ``widget`` (by default the field it names; None clears every error)."""
        for label in self.errors.values():
            label.clear()
            label.hide()
        if message:
            if widget is None:
                widget, message = self._field_for(message)
            label = self.errors[widget]
            label.setText(message)
            label.show()

    def error_text(self) -> str:
        return next((label.text() for label in self.errors.values() if not label.isHidden()), "")

    # -- persistence ------------------------------------------------------------------------
    def save(self, settings: QSettings) -> None:
        for key, value in asdict(self.values()).items():
            settings.setValue(f"plan/{key}", value)

    def restore(self, settings: QSettings) -> None:
        current = asdict(self.values())
        restored = {}
        for f in fields(FormValues):
            raw = settings.value(f"plan/{f.name}")
            if raw is None:
                continue
            default = current[f.name]
            try:  # QSettings' ini backend returns strings: convert by the field's own type
                value = (str(raw).lower() == "true") if isinstance(default, bool) else type(default)(raw)
            except (TypeError, ValueError):
                continue
            restored[f.name] = value
        self.set_values(FormValues(**{**current, **restored}))
