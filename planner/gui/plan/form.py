"""The Plan page's form: every estimate option, with tooltips and errors shown beside the field.

Its fields are one table (:mod:`planner.gui.common.binding`): it reads them into
:class:`FormValues` and writes them back (QSettings persistence); the planner validates, and its
one-line error names the option, which picks the field.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QWidget,
)

from planner.catalog import catalog
from planner.gui.common.binding import (
    CHOICE,
    DECIMAL,
    FLAG,
    TEXT,
    WHOLE,
    Access,
    Field,
    FieldTable,
    Row,
    error_label,
)
from planner.gui.common.number_box import StrictDoubleSpinBox, StrictSpinBox
from planner.gui.plan.model import FormValues, stack_form_values
from planner.loss import LOSSES
from planner.options import (
    ADAPTER_DTYPES,
    ATTENTIONS,
    KERNELS,
    METHODS,
    OFFLOADS,
    OPTIMIZERS,
    PEFTS,
    PRECISIONS,
    QUANTS,
    SHARDINGS,
    STACKS,
)


def _combo(values: tuple[str, ...], tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(values))
    box.setToolTip(tip)
    return box


def _spin(low: int, high: int, tip: str, step: int = 1) -> StrictSpinBox:
    spin = StrictSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setGroupSeparatorShown(True)
    spin.setToolTip(tip)
    return spin


def _check(text: str, tip: str) -> QCheckBox:
    box = QCheckBox(text)
    box.setToolTip(tip)
    return box


def _edit(tip: str) -> QLineEdit:
    edit = QLineEdit()
    edit.setToolTip(tip)
    return edit


MODEL = Access(lambda w: w.currentText().strip(), lambda w, v: w.setCurrentText(v), lambda w: (w.editTextChanged,))
"""The editable model box: any text is a value (a catalog id, a folder, a config.json path)."""


class PlanForm(QWidget):
    changed = Signal()
    """Any field changed (the page debounces)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model_box = self._model_box()
        self.open_button = QPushButton("Open...")
        self.open_button.setToolTip("Plan a local model: its config.json, or a folder (exact counts from "
                                    "*.safetensors headers, no weights loaded).")
        menu = QMenu(self.open_button)
        menu.addAction("Model folder...", self._open_folder)
        menu.addAction("config.json...", self._open_config)
        self.open_button.setMenu(menu)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_box, 1)
        model_row.addWidget(self.open_button)
        self.stack_box = _combo(STACKS, "The training stack you plan for: hf is this app's trainer (Hugging Face "
                                "Trainer + peft). Another stack writes its defaults into the fields below (edit "
                                "them freely) and its recipe per method (optimizer, accumulation) into each bar; "
                                "the notes under the chart cite each from the stack's code.")
        self.stack_box.currentTextChanged.connect(self._stack_chosen)
        self.method_box = _combo(METHODS, "Your method: outlined in the chart and bold in the summary. "
                                 "The chart always compares all four.")
        self.method_box.currentTextChanged.connect(
            lambda _: self._stack_chosen(self.stack_box.currentText(), recipe_only=True))
        self.quant_box = _combo(QUANTS, "QLoRA base format (bitsandbytes): NF4/FP4 4-bit or LLM.int8.")
        self.double_quant_box = _check("double quantization",
                                       "Quantize the 4-bit block scales again: ~0.4 bits/param saved.")
        self.precision_box = _combo(PRECISIONS, "Weight and compute dtype. *-mixed keeps fp32 "
                                    "master weights with 16-bit autocast (AMP).")
        self.adapter_box = _combo(ADAPTER_DTYPES, "LoRA weights' dtype (peft keeps fp32).")
        self.optimizer_box = _combo(OPTIMIZERS, "Hugging Face `optim` name. 8-bit and paged "
                                    "optimizers (bitsandbytes) shrink the optimizer states.")
        self.in_backward_box = _check("optimizer step in backward (full)",
                                      "Full fine-tuning: each parameter updated and its gradient freed as soon "
                                      "as backward has it, so the gradients never exist all at once. No gradient "
                                      "accumulation or clipping; one GPU.")
        self.batch_spin = _spin(1, 1024, "Micro-batch per GPU (per_device_train_batch_size).")
        self.accum_spin = _spin(1, 1024, "Gradient accumulation steps: micro-batches per optimizer step. Above 1 "
                                "the gradients stay allocated through the next micro-batch's forward.")
        self.seq_spin = _spin(1, 1_048_576, "Tokens per sample after padding/packing.", step=256)
        self.lora_r_spin = _spin(1, 1024, "LoRA rank r (LoRA and QLoRA bars).")
        self.lora_alpha_spin = _spin(1, 4096, "LoRA alpha (scaling; no memory effect).")
        self.targets_edit = _edit("all-linear, or module names such as q_proj,v_proj.")
        self.save_edit = _edit("Modules trained in full beside the adapters, e.g. embed_tokens,lm_head.")
        self.peft_box = _combo(PEFTS, "The adapter on the LoRA and QLoRA bars (peft): lora (DoRA with the box "
                               "below), adalora (ranks pruned by importance), ia3 (learned scales), prompt "
                               "(virtual tokens at the input), prefix (virtual keys and values in every layer; "
                               "its bars plan checkpointing off, which it needs). All of them train on a 4-bit "
                               "base too.")
        self.virtual_spin = _spin(1, 4096, "Prompt and prefix tuning: trained virtual tokens (they lengthen every "
                                  "sample, or every layer's keys).")
        self.dora_box = _check("DoRA (LoRA, QLoRA)",
                               "Weight-decomposed LoRA (peft use_dora): a trained magnitude per output row; "
                               "each adapted layer keeps two more outputs for backward and renormalizes its "
                               "weight every forward.")
        self.ckpt_box = _check("gradient checkpointing", "Recompute activations in the "
                               "backward pass: far less activation memory for about a third more compute.")
        self.offload_acts_box = _check("offload checkpoints to host RAM",
                                       "With checkpointing: each layer's saved input waits in host RAM, "
                                       "not on the GPU (transformers' offload): long sequences fit, each "
                                       "step copies them out and back.")
        self.attention_box = _combo(ATTENTIONS, "Attention kernel; eager materialises the "
                                    "seq x seq score matrix.")
        self.loss_box = _combo(LOSSES, "standard: the whole (tokens x vocab) logits and three fp32 buffers at "
                               "once; chunked: LM head and loss chunk by chunk (the trainer's loss: chunked).")
        self.kernels_box = _combo(KERNELS, "eager: PyTorch's and peft's modules (what this app's trainer runs); "
                                  "compile: the same under torch.compile, each chain of pointwise operations "
                                  "one kernel (faster); unsloth: Unsloth's fused LoRA kernels, faster and "
                                  "keeping fewer activations. Both are estimates only: the trainer runs eager.")
        self.upcast_box = _check("fp32 upcast (QLoRA)",
                                 "QLoRA: prepare_model_for_kbit_training casts embeddings, LM head and norms to "
                                 "fp32 (on by default). Off keeps them in the load dtype, as the QLoRA paper's "
                                 "script did: less memory.")
        self.gpus_spin = _spin(1, 1024, "GPUs of the selected kind (memory is per GPU).")
        self.sharding_box = _combo(SHARDINGS, "ddp replicates; zero2 shards gradients and optimizer "
                                   "state; fsdp/zero3 also shard the weights.")
        self.offload_box = _combo(OFFLOADS, "Move optimizer state (or also weights) to host RAM.")
        self.gpu_label = QLabel("RTX 4090 (catalog)")
        # "RTX 4090 · 24 GB datasheet, 23.99 GiB usable (catalog)" must not widen the form
        self.gpu_label.setWordWrap(True)
        self.gpu_spin = StrictDoubleSpinBox()
        self.gpu_spin.setRange(1.0, 4096.0)
        self.gpu_spin.setDecimals(2)  # 23.99 GiB is an RTX 4090 as the driver reports it; 24.0 is not
        self.gpu_spin.setSuffix(" GiB")
        self.gpu_spin.setToolTip("Memory per GPU (as nvidia-smi shows it): the dashed line. Set by the "
                                 "Hardware page; edit it to plan for another card.")
        self.packing_box = _check("pack examples", "Concatenate examples into blocks of exactly the sequence "
                                  "length (the trainer's packing) instead of padding each micro-batch to its "
                                  "longest example: with a data file below, the time counts the padding it saves.")
        self.data_edit = _edit("Your training data (.jsonl, .json, .csv, .parquet), tokenized by the model "
                               "folder's tokenizer as a run would: its examples' lengths set how much of each "
                               "micro-batch is padding, and its tokens the data set's size (time and cost). "
                               "Empty: every example fills the sequence length.")
        self.data_button = QPushButton("Browse...")
        self.data_button.clicked.connect(self._open_data)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(self.data_button)
        self.tokens_spin = _spin(1, 2_000_000_000, "Tokens in your data set (time and cost), when no data file "
                                 "is given.", step=1_000_000)
        self.epochs_spin = StrictDoubleSpinBox()
        self.epochs_spin.setRange(0.01, 1000)
        self.epochs_spin.setToolTip("Passes over the data set (time and cost).")
        self.quality_box = _check("maximum quality (prefer full fine-tuning)",
                                  "The recommendation picks full fine-tuning when it fits.")

        # FormValues' fields, in the form's order; `option` where the CLI's name is not the field's
        rows: tuple[Field | Row, ...] = (
            Field("model", "Model", self.model_box, MODEL, shown=model_row),
            Field("stack", "Stack", self.stack_box, CHOICE),
            Field("method", "Method", self.method_box, CHOICE),
            Field("quant", "QLoRA base", self.quant_box, CHOICE),
            Field("double_quant", "", self.double_quant_box, FLAG),
            Field("kbit_upcast", "", self.upcast_box, FLAG),
            Field("precision", "Precision", self.precision_box, CHOICE),
            Field("adapter_dtype", "Adapter dtype", self.adapter_box, CHOICE),
            Field("optimizer", "Optimizer", self.optimizer_box, CHOICE),
            Field("optimizer_in_backward", "", self.in_backward_box, FLAG),
            Field("batch_size", "Batch size", self.batch_spin, WHOLE),
            Field("gradient_accumulation_steps", "Grad accumulation", self.accum_spin, WHOLE),
            Field("seq_len", "Sequence length", self.seq_spin, WHOLE),
            Field("lora_r", "LoRA r", self.lora_r_spin, WHOLE),
            Field("lora_alpha", "LoRA alpha", self.lora_alpha_spin, WHOLE),
            Field("lora_targets", "LoRA targets", self.targets_edit, TEXT),
            Field("modules_to_save", "Modules to save", self.save_edit, TEXT),
            Field("peft", "Adapter", self.peft_box, CHOICE),
            Field("virtual_tokens", "Virtual tokens", self.virtual_spin, WHOLE),
            Field("use_dora", "", self.dora_box, FLAG),
            Field("grad_checkpointing", "", self.ckpt_box, FLAG),
            Field("offload_activations", "", self.offload_acts_box, FLAG),
            Field("attention", "Attention", self.attention_box, CHOICE),
            Field("loss", "Loss", self.loss_box, CHOICE),
            Field("kernels", "Kernels", self.kernels_box, CHOICE),
            Field("num_gpus", "GPUs", self.gpus_spin, WHOLE),
            Field("sharding", "Sharding", self.sharding_box, CHOICE),
            Field("offload", "Offload", self.offload_box, CHOICE),
            Row("GPU", self.gpu_label),
            Field("gpu_gib", "GPU memory", self.gpu_spin, DECIMAL, option="gpu-memory-gib"),
            Field("packing", "", self.packing_box, FLAG),
            Field("data", "Data set file", self.data_edit, TEXT, shown=data_row),
            Field("dataset_tokens", "Data set tokens", self.tokens_spin, WHOLE),
            Field("epochs", "Epochs", self.epochs_spin, DECIMAL),
            Field("max_quality", "", self.quality_box, FLAG),
        )
        self.table = FieldTable(row for row in rows if isinstance(row, Field))
        self.errors: dict[str, QLabel] = {}
        """Each field's error label, in the row under it."""
        self.layout_ = QFormLayout(self)
        for row in rows:
            if isinstance(row, Row):
                self.layout_.addRow(row.label, row.widget)
                continue
            self.layout_.addRow(row.label, row.shown or row.widget)
            self.errors[row.name] = error_label()
            self.layout_.addRow("", self.errors[row.name])
        self.set_values(FormValues())
        self.table.connect(self.changed)

    # -- layout -----------------------------------------------------------------------------
    def _model_box(self) -> QComboBox:
        ids = sorted(catalog(), key=str.lower)
        box = QComboBox()
        box.setEditable(True)
        box.addItems(ids)
        box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        box.setMinimumContentsLength(14)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        # "llama-3" should find meta-llama/Llama-3.1-8B: substring, any case.
        completer = QCompleter(ids, box)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        box.setCompleter(completer)
        box.setToolTip("A catalog id (type any part of it), a model folder, or a config.json path.")
        return box

    def _open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder (config.json, *.safetensors)")
        if path:
            self.model_box.setCurrentText(path)

    def _open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A model's config.json", "", "config (*.json);;All files (*)")
        if path:
            self.model_box.setCurrentText(path)

    def _open_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training data", "",
                                              "data (*.jsonl *.json *.csv *.parquet);;All files (*)")
        if path:
            self.data_edit.setText(path)

    def _stack_chosen(self, name: str, recipe_only: bool = False) -> None:
        """Write the chosen stack's defaults, with its recipe for the form's method, into the fields
        they belong to (the estimator's defaults where it sets none), so the form shows what the
        bars are planned with; ``recipe_only``: the method changed, only its recipe's knobs."""
        if name not in STACKS:
            return
        values = asdict(self.values())
        values.update(stack_form_values(name, values["method"], recipe_only))
        blocked = self.blockSignals(True)  # the stack's own change is the one announcement
        try:
            self.set_values(FormValues(**values))
        finally:
            self.blockSignals(blocked)

    # -- values -----------------------------------------------------------------------------
    def values(self) -> FormValues:
        return FormValues(**self.table.values())

    def set_values(self, v: FormValues) -> None:
        self.table.set_values(asdict(v))

    def input_problem(self) -> tuple[str, str] | None:
        """The first number box whose text is not a value, as (field, "Batch size: '4k' is not ..."):
        the form says so rather than planning with the number Qt would have made of it."""
        if (refused := self.table.input_problem()) is None:
            return None
        field, problem = refused
        return field.name, f"{field.title}: {problem}"

    # -- errors -----------------------------------------------------------------------------
    def _field_for(self, message: str, field: str = "") -> tuple[str, str]:
        """The field an error is about: the one the planner's error names (``PlannerError.field``),
        else the first option its message names (``--batch-size``), else the model; and the
        message in the form's words, the field's label instead of the CLI option."""
        named = self.table[field] if field in self.table.names() else None
        if named is None:
            found = self.table.named_in(message)
            if found is None:
                return "model", message
            named = found[0]
        return named.name, message.replace(named.cli_option, named.title, 1)

    def show_error(self, message: str | None, field: str = "", as_is: bool = False) -> None:
        """Show ``message`` beside its field (``field``, else the one it names); ``as_is`` keeps the
        text as given. None clears every error."""
        for label in self.errors.values():
            label.clear()
            label.hide()
        if message:
            if not as_is:
                field, message = self._field_for(message, field)
            label = self.errors[field]
            label.setText(message)
            label.show()

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
