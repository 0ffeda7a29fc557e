""""Plan for": the GPU the planner sizes a run for.

One searchable list: this machine's GPUs first (when NVML sees any), then every catalog GPU, then
"Custom memory". Detected GPUs are the default; a catalog or custom choice is remembered in
QSettings (``plan/gpu``, ``plan/gpu_count``) and restored on a machine without a GPU, where the
user can only plan for hardware they will rent or buy.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSettings, QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from planner.catalog.gpus import gpu_catalog, memory_text
from planner.gui.hardware.model import (
    CUSTOM_PREFIX,
    DEFAULT_CATALOG_GPU,
    catalog_entry,
    catalog_target,
    custom_target,
    nvml_target,
    parse_choice,
    same_kind,
)
from planner.hardware import Gpu
from planner.targets import GpuTarget
from planner.units import GiB, fmt_gib

MAX_COUNT = 64
"""GPUs a catalog or custom plan may assume (a multi-node job; DeepSpeed/FSDP plans go that far)."""
DEFAULT_CUSTOM_GIB = 24.0


class GpuPicker(QWidget):
    changed = Signal(object)
    """The user (or a rescan) chose another target: a ``GpuTarget``."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._gpus: tuple[Gpu, ...] = ()
        self.combo = QComboBox()
        self.combo.setEditable(True)  # type to search: 32 catalog GPUs are too many to scroll
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setMinimumContentsLength(34)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        completer, edit = self.combo.completer(), self.combo.lineEdit()
        assert completer is not None and edit is not None  # an editable combo has both
        completer.setFilterMode(Qt.MatchFlag.MatchContains)  # "4090" finds "RTX 4090 · 24 GB datasheet..."
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        edit.setPlaceholderText("type to search GPUs")
        self.custom_spin = QDoubleSpinBox()
        self.custom_spin.setRange(1.0, 4096.0)
        self.custom_spin.setDecimals(1)
        self.custom_spin.setSuffix(" GiB")
        self.custom_spin.setValue(DEFAULT_CUSTOM_GIB)
        self.custom_spin.setToolTip("Memory per GPU; speed and price come from the catalog GPU nearest in memory")
        self.count_spin = QSpinBox()
        self.count_spin.setPrefix("× ")
        self.count_spin.setRange(1, 1)
        self.count_spin.setToolTip("How many of these GPUs the run uses")
        self.detail_label = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Plan for"))
        layout.addWidget(self.combo)
        layout.addWidget(self.custom_spin)
        layout.addWidget(self.count_spin)
        layout.addWidget(self.detail_label, 1)
        self.combo.currentIndexChanged.connect(self._chosen)
        edit.editingFinished.connect(self._typed)
        self.custom_spin.valueChanged.connect(self._chosen)
        self.count_spin.valueChanged.connect(self._chosen)

    # -- the list ---------------------------------------------------------------------------
    def set_detected(self, gpus: Sequence[Gpu]) -> None:
        """Rebuild the list for this machine's GPUs and choose the default, then announce it.

        Called once the page has its first inventory, and again on every rescan.
        """
        def kinds(gs: Sequence[Gpu]) -> list[tuple[int, str | None, int | None]]:
            return [(g.index, g.name, g.memory_total) for g in gs]

        # A rescan that finds the same GPUs keeps the user's choice; new hardware resets it.
        previous = (self.key(), self.count_spin.value()) if self.combo.count() else None
        if kinds(gpus) != kinds(self._gpus):
            previous = None
        self._gpus = tuple(gpus)
        with QSignalBlocker(self.combo):
            self.combo.clear()
            for g in self._gpus:
                memory = f" · {fmt_gib(g.memory_total / GiB)}" if g.memory_total else ""
                self.combo.addItem(f"GPU {g.index}: {g.name or 'unknown'}{memory} (this machine)", ("nvml", g.index))
            if self._gpus:
                self.combo.insertSeparator(self.combo.count())
            for spec in gpu_catalog().values():
                self.combo.addItem(f"{spec.name} · {memory_text(spec)}", ("catalog", spec.name))
            self.combo.addItem("Custom memory…", ("custom", None))
        if previous is not None and self._find(previous[0]) >= 0:
            self._select(*previous)  # a rescan keeps the user's choice when it still exists
        elif self._gpus:
            self._select(("nvml", self._gpus[0].index), 1)  # plan for the hardware at hand
        else:
            self._restore()
        self._announce(persist=False)

    def _restore(self) -> None:
        """The last catalog or custom choice (``plan/gpu``), else the default catalog GPU."""
        stored = parse_choice(self.settings.value("plan/gpu"))
        if stored is not None and stored[0] == "custom":
            with QSignalBlocker(self.custom_spin):
                self.custom_spin.setValue(stored[1] or DEFAULT_CUSTOM_GIB)
            self._select(("custom", None), self._stored_count())
        else:
            self._select(("catalog", stored[0] if stored else DEFAULT_CATALOG_GPU), self._stored_count())

    def _stored_count(self) -> int:
        try:
            return max(1, int(str(self.settings.value("plan/gpu_count", 1))))
        except ValueError:
            return 1

    def _select(self, key: tuple[str, object], count: int) -> None:
        """Show ``key`` as chosen without announcing each step (``_chosen`` announces once)."""
        index = self._find(key)
        with QSignalBlocker(self.combo), QSignalBlocker(self.count_spin):
            self.combo.setCurrentIndex(max(index, 0))
            self._update_count_range()
            self.count_spin.setValue(count)

    def _find(self, key: tuple[str, object]) -> int:
        # Not QComboBox.findData: PySide compares Python objects stored as item data by identity.
        return next((i for i in range(self.combo.count()) if self.combo.itemData(i) == key), -1)

    def key(self) -> tuple[str, object]:
        return self.combo.currentData() or ("catalog", DEFAULT_CATALOG_GPU)

    def _detected(self, index: object) -> Gpu | None:
        return next((g for g in self._gpus if g.index == index), None)

    def _update_count_range(self) -> None:
        kind, value = self.key()
        gpu = self._detected(value) if kind == "nvml" else None
        self.count_spin.setMaximum(same_kind(self._gpus, gpu) if gpu is not None else MAX_COUNT)
        self.custom_spin.setVisible(kind == "custom")

    # -- choosing ---------------------------------------------------------------------------
    def target(self) -> GpuTarget:
        kind, value = self.key()
        count = self.count_spin.value()
        gpu = self._detected(value) if kind == "nvml" else None
        if gpu is not None:
            return nvml_target(gpu, count)
        if kind == "custom":
            return custom_target(self.custom_spin.value(), count)
        return catalog_target(str(value) if kind == "catalog" else DEFAULT_CATALOG_GPU, count)

    def _chosen(self, *_: object) -> None:
        """A user's change: announce it and remember it."""
        self._announce(persist=True)

    def _announce(self, persist: bool) -> None:
        # Defaults are not written back: a later default (or catalog) change must reach users
        # who never chose.
        with QSignalBlocker(self.count_spin):
            self._update_count_range()
        kind, value = self.key()
        target = self.target()
        if persist and kind != "nvml":  # a detected GPU is the default anyway; keep the no-GPU choice
            choice = str(value) if kind == "catalog" else f"{CUSTOM_PREFIX}{self.custom_spin.value():g}"
            self.settings.setValue("plan/gpu", choice)
            self.settings.setValue("plan/gpu_count", target.count)
        self.detail_label.setText(self._detail(target))
        self.changed.emit(target)

    def _typed(self) -> None:
        """Enter or focus-out after typing: take the first entry containing the text, else undo it."""
        text = self.combo.currentText().strip()
        if text == self.combo.itemText(self.combo.currentIndex()):
            return
        index = self.combo.findText(text, Qt.MatchFlag.MatchContains) if text else -1
        if index >= 0 and self.combo.itemData(index) is not None:
            self.combo.setCurrentIndex(index)
        self.combo.setEditText(self.combo.itemText(self.combo.currentIndex()))

    def show_target(self, t: GpuTarget) -> None:
        """Reflect a target another page set, without announcing it back."""
        if t.source == "catalog":
            key: tuple[str, object] = ("catalog", t.name)
        elif t.source == "custom":
            key = ("custom", None)
            with QSignalBlocker(self.custom_spin):
                self.custom_spin.setValue(t.memory_bytes / GiB)
        else:
            gpu = next((g for g in self._gpus if (g.name, g.memory_total) == (t.name, t.memory_bytes)), None)
            if gpu is None:
                return
            key = ("nvml", gpu.index)
        if self._find(key) >= 0:
            self._select(key, t.count)
            self.detail_label.setText(self._detail(t))

    def _detail(self, t: GpuTarget) -> str:
        """Memory, then what the time and cost figures will assume, and where that comes from."""
        per = fmt_gib(t.memory_bytes / GiB) + (" per GPU" if t.count > 1 else "")
        speed = f"{t.spec.peak_flops / 1e12:.0f} TFLOPS 16-bit"
        price = t.spec.price()
        if price is not None:
            speed += f", ${price.usd_per_hour:.2f}/h"
        kind, value = self.key()
        gpu = self._detected(value) if kind == "nvml" else None
        if kind == "catalog" or (gpu is not None and catalog_entry(gpu) is not None):
            return f"{per} · {speed}" if kind == "catalog" else f"{per} · catalog {t.spec.name}: {speed}"
        return f"{per} · {speed} of {t.spec.name} (nearest in memory)"
