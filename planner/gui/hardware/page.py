"""The Hardware page: this machine's GPUs and host live, and the GPU the planner sizes runs for.

A full ``inventory()`` runs once when the page is built (and on Rescan); afterwards a 1 Hz timer
calls the cheap ``sample()`` (microseconds per GPU, no re-enumeration). Samples always go into
the history, so the chart keeps its window while another page is on screen, but widgets are only
touched while the page is visible: a hidden page costs one NVML read and a ring write per second.
Nothing here touches CUDA: NVML reads the driver without creating a context.
"""

from __future__ import annotations

import html
import math
import time

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QPalette, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from planner.gui.hardware.cards import GpuCard, HostCard
from planner.gui.hardware.chart import MemoryChart
from planner.gui.hardware.model import History
from planner.gui.hardware.picker import GpuPicker
from planner.gui.state import AppState
from planner.hardware import Inventory, inventory, sample
from planner.targets import GpuTarget

SAMPLE_MS = 1000
WINDOW_MINUTES = (1, 10, 60)
DEFAULT_WINDOW_MINUTES = 10
CARD_COLUMNS = 3
MAX_CARDS_HEIGHT = 360


class HardwarePage(QWidget):
    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.cards: list[GpuCard] = []
        self.host_card: HostCard | None = None
        self.latest: Inventory | None = None
        """The newest inventory or sample; shown when the page next becomes visible."""

        self.banner = QFrame()
        self.banner.setFrameShape(QFrame.Shape.StyledPanel)
        # A palette role, not a colour: the banner stands out in light and dark themes alike.
        self.banner.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self.banner.setAutoFillBackground(True)
        icon = QLabel()
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_MessageBoxIconSize)
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning).pixmap(size, size))
        self.banner_label = QLabel()
        self.banner_label.setWordWrap(True)
        self.banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        banner_layout.addWidget(self.banner_label, 1)

        self.picker = GpuPicker(state.settings)
        self.driver_label = QLabel()
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.setToolTip("Enumerate the GPUs again (after installing a driver or a GPU reset)")
        self.rescan_button.clicked.connect(self.rescan)
        top = QHBoxLayout()
        top.addWidget(self.picker, 1)
        top.addWidget(self.driver_label)
        top.addWidget(self.rescan_button)

        self.card_grid = QGridLayout()
        cards = QWidget()
        cards_layout = QVBoxLayout(cards)
        cards_layout.addLayout(self.card_grid)
        self.notes_label = QLabel()
        self.notes_label.setWordWrap(True)
        cards_layout.addWidget(self.notes_label)
        cards_layout.addStretch(1)
        self.cards_widget = cards
        self.cards_area = scroll = _CardsArea()  # not "scroll": that is a QWidget method
        scroll.setWidget(cards)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        self.window_box = QComboBox()
        for minutes in WINDOW_MINUTES:
            self.window_box.addItem(f"last {minutes} min", minutes)
        chart_head = QHBoxLayout()
        chart_head.addWidget(QLabel("<b>Memory used</b> (sampled every second)"))
        chart_head.addStretch(1)
        chart_head.addWidget(self.window_box)
        self.chart = MemoryChart()
        chart_box = QWidget()
        chart_layout = QVBoxLayout(chart_box)
        chart_layout.setContentsMargins(0, 0, 0, 0)
        chart_layout.addLayout(chart_head)
        chart_layout.addWidget(self.chart, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(scroll)
        split.addWidget(chart_box)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        stored = str(state.settings.value("hardware/window_min", DEFAULT_WINDOW_MINUTES))
        minutes = int(stored) if stored.isdigit() and int(stored) in WINDOW_MINUTES else DEFAULT_WINDOW_MINUTES
        self.window_box.setCurrentIndex(WINDOW_MINUTES.index(minutes))
        self.history = History(1, self._capacity(minutes))
        self.chart.set_window(minutes * 60)
        self.window_box.currentIndexChanged.connect(self._window_changed)

        self.picker.changed.connect(state.set_gpu)
        state.gpu_changed.connect(self._state_gpu)
        self._apply(inventory())

        self.timer = QTimer(self)
        self.timer.setInterval(SAMPLE_MS)
        self.timer.timeout.connect(self.sample_now)
        self.timer.start()

    # -- inventory --------------------------------------------------------------------------
    def rescan(self) -> None:
        self._apply(inventory())

    def _apply(self, inv: Inventory) -> None:
        """Build cards, curves and the list of GPUs for a fresh inventory (not per sample)."""
        self.latest = inv
        self.banner.setVisible(not inv.gpus)
        self.banner_label.setText(
            f"<b>No NVIDIA GPU: {html.escape(inv.reason or 'none found')}</b><br>Live monitoring shows host RAM only. "
            "Choose below the GPU to plan for: a catalog GPU you could rent or buy, or any memory size.")
        versions = [f"NVIDIA driver {inv.driver_version}" if inv.driver_version else "",
                    f"CUDA {inv.cuda_driver_version}" if inv.cuda_driver_version else ""]
        self.driver_label.setText(" · ".join(v for v in versions if v))
        old: list[QWidget] = [*self.cards, *([self.host_card] if self.host_card else [])]
        for widget in old:
            self.card_grid.removeWidget(widget)
            widget.deleteLater()
        self.cards = [GpuCard(g) for g in inv.gpus]
        self.host_card = HostCard(inv.host)
        new: list[QWidget] = [*self.cards, self.host_card]
        for i, widget in enumerate(new):
            self.card_grid.addWidget(widget, i // CARD_COLUMNS, i % CARD_COLUMNS)
        for column in range(CARD_COLUMNS):
            self.card_grid.setColumnStretch(column, 1)  # equal widths, also with fewer cards than columns
        self.cards_area.updateGeometry()
        self.history = History(len(inv.gpus) + 1, self.history.capacity)
        self.chart.set_series([f"GPU {g.index}" for g in inv.gpus])
        self._record(inv)
        self._show(inv)
        self.picker.set_detected(inv.gpus)

    # -- sampling ---------------------------------------------------------------------------
    def sample_now(self) -> None:
        """The 1 Hz timer's slot: read, record, and repaint only what a user can see."""
        inv = sample()
        self.latest = inv
        self._record(inv)
        if self.isVisible() and not self.window().isMinimized():
            self._show(inv)

    def _record(self, inv: Inventory) -> None:
        # Match by NVML index: a GPU that stops answering becomes a gap, not a shifted curve.
        by_index = {g.index: g for g in inv.gpus}
        values = []
        for card in self.cards:
            g = by_index.get(card.index)
            values.append(math.nan if g is None or g.memory_used is None else float(g.memory_used))
        total, available = inv.host.ram_total, inv.host.ram_available
        values.append(math.nan if total is None or available is None else float(total - available))
        self.history.append(time.monotonic(), values)

    def _show(self, inv: Inventory) -> None:
        by_index = {g.index: g for g in inv.gpus}
        for card in self.cards:
            g = by_index.get(card.index)
            if g is not None:
                card.update_gpu(g)
        if self.host_card is not None:
            self.host_card.update_host(inv.host)
        notes = "\n".join(f"Note: {n}" for n in inv.notes)
        if self.notes_label.text() != notes:
            self.notes_label.setText(notes)
            self.notes_label.setVisible(bool(notes))
        self.chart.show_history(self.history)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's name)
        # Catch up on what was sampled while hidden.
        super().showEvent(event)
        if self.latest is not None:
            self._show(self.latest)

    # -- window and GPU ---------------------------------------------------------------------
    @staticmethod
    def _capacity(minutes: int) -> int:
        return max(1, minutes * 60_000 // SAMPLE_MS)

    def set_window_minutes(self, minutes: int) -> None:
        self.window_box.setCurrentIndex(WINDOW_MINUTES.index(minutes))

    def _window_changed(self) -> None:
        minutes = int(self.window_box.currentData())
        self.history.resize(self._capacity(minutes))
        self.chart.set_window(minutes * 60)
        self.state.settings.setValue("hardware/window_min", minutes)
        self.chart.show_history(self.history)

    def _state_gpu(self, gpu: GpuTarget | None) -> None:
        """Another page set the GPU: nothing to do unless it differs from the picker's choice."""
        if gpu is not None and gpu != self.picker.target():
            self.picker.show_target(gpu)


class _CardsArea(QScrollArea):
    """Tall enough for a row of cards (computed when laid out, so it follows the process
    tables), at most MAX_CARDS_HEIGHT; the chart gets the rest and further rows scroll."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is None:
            return hint
        return QSize(hint.width(), min(inner.sizeHint().height(), MAX_CARDS_HEIGHT))
