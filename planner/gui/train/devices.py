"""The Train form's GPU box: a checkbox per GPU NVML reports, and how several GPUs share the model.

It only shows and reads the choice; what a choice means (processes, environment, messages) is
:mod:`planner.gui.train.gpus`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from planner.gui.common.binding import ERROR_STYLE
from planner.gui.train.gpus import NO_GPU_NOTE, GpuOption, check_choice, first_gpus
from trainer.config import SHARDINGS

SHARDING_TIP = ("How 2 or more GPUs share the work (one process per GPU):\n"
                "ddp: a full replica of the model on every GPU; each trains on its share of the batches.\n"
                "fsdp: parameters, gradients and optimizer state sharded across the GPUs; needed when one "
                "GPU cannot hold the model.")


class DevicesBox(QGroupBox):
    changed = Signal()
    """A GPU was checked or unchecked, or the sharding changed."""

    def __init__(self, options: Sequence[GpuOption], parent: QWidget | None = None) -> None:
        super().__init__("GPUs", parent)
        self.options = tuple(options)
        self.checks: list[QCheckBox] = []
        for option in self.options:
            check = QCheckBox(option.label)
            check.setChecked(True)  # a machine's GPUs are there to be used; uncheck one a colleague has
            check.setToolTip(f"Train on GPU {option.index} (NVML numbering, as on the Hardware page): "
                             "one process per checked GPU.")
            check.toggled.connect(self._toggled)
            self.checks.append(check)
        self.note = QLabel(f"<i>{NO_GPU_NOTE}</i>")
        self.note.setToolTip("NVML reports no NVIDIA GPU (see the Hardware page for why).")
        self.error_label = QLabel()
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()
        self.sharding_box = QComboBox()
        self.sharding_box.addItems(list(SHARDINGS))
        self.sharding_box.setToolTip(SHARDING_TIP)
        self.sharding_box.currentTextChanged.connect(self.changed)

        column = QWidget()
        col = QVBoxLayout(column)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        for check in self.checks:
            col.addWidget(check)
        col.addWidget(self.note)
        self.note.setVisible(not self.options)
        col.addWidget(self.error_label)
        form = QFormLayout(self)
        form.addRow("Train on", column)
        form.addRow("Sharding", self.sharding_box)
        # no GPU: one CPU process, so there is nothing to shard
        form.setRowVisible(self.sharding_box, bool(self.options))
        self._toggled()

    # -- values ------------------------------------------------------------------------------------
    @property
    def present(self) -> tuple[int, ...]:
        return tuple(o.index for o in self.options)

    def chosen(self) -> tuple[int, ...]:
        """NVML indices of the checked GPUs, in order."""
        return tuple(o.index for o, c in zip(self.options, self.checks) if c.isChecked())

    def choose(self, indices: Sequence[int]) -> None:
        """Check exactly these GPUs (one `changed`)."""
        for option, check in zip(self.options, self.checks):
            with QSignalBlocker(check):
                check.setChecked(option.index in indices)
        self._toggled()

    def choose_count(self, wanted: int) -> None:
        """A config's ``num_processes``: its first GPUs (all of them when it asks for more)."""
        self.choose(first_gpus(self.present, wanted))

    def sharding(self) -> str:
        return self.sharding_box.currentText()

    def set_sharding(self, value: str) -> None:
        if self.sharding_box.findText(value) >= 0:
            self.sharding_box.setCurrentText(value)

    def error(self) -> str:
        """The choice's problem ("" when fine); also shown under the checkboxes."""
        err = check_choice(self.present, self.chosen())
        return err.message if err else ""

    # -- reactions ---------------------------------------------------------------------------------
    def _toggled(self) -> None:
        self.sharding_box.setEnabled(len(self.chosen()) >= 2)
        message = self.error()
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))
        self.changed.emit()
