"""Cards of the Hardware page: one per GPU (memory bar, load, its processes) and one for the host.

Built once per inventory; ``update`` rewrites only what changed since the last sample, so an
idle second costs a few string comparisons and no re-layout.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from planner.gui.hardware.model import catalog_entry, nearest_spec
from planner.hardware import Gpu, GpuProcess, HostInfo
from planner.units import GiB, MiB

NA = "n/a"
WDDM_TIP = "The driver does not report per-process memory (Windows WDDM or WSL): the OS manages it."
MAX_PROCESS_ROWS = 6
"""Rows shown before the process table scrolls: a busy shared server must not push the chart away."""


_UNSET = object()


def _gib(n: int | None) -> str:
    return NA if n is None else f"{n / GiB:.2f} GiB"


def memory_text(used: int | None, total: int | None) -> str:
    if used is None or not total:
        return f"{_gib(used)} used of {_gib(total)}"
    return f"{used / GiB:.2f} / {total / GiB:.2f} GiB used ({used / total:.0%})"


def power_text(draw: float | None, limit: float | None) -> str:
    if draw is None:
        return NA if limit is None else f"{NA} / {limit:.0f} W"
    return f"{draw:.0f} W" if limit is None else f"{draw:.0f} / {limit:.0f} W"


def _set(label: QLabel, text: str) -> None:
    if label.text() != text:  # a changed text re-lays out the card: skip the common unchanged case
        label.setText(text)


def _bar() -> QProgressBar:
    # Range in MiB: QProgressBar holds ints, and bytes of an 80 GiB GPU overflow 32 bits.
    bar = QProgressBar()
    bar.setTextVisible(True)
    bar.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return bar


def _show_memory(bar: QProgressBar, used: int | None, total: int | None) -> None:
    maximum = max(1, (total or 0) // MiB)
    if bar.maximum() != maximum:
        bar.setRange(0, maximum)
    value = min(maximum, (used or 0) // MiB)
    if bar.value() != value:
        bar.setValue(value)
    text = memory_text(used, total)
    if bar.format() != text:
        bar.setFormat(text)


class GpuCard(QGroupBox):
    """Name and catalog entry, memory used/total, utilization, temperature, power, processes."""

    def __init__(self, gpu: Gpu, parent: QWidget | None = None) -> None:
        super().__init__(f"GPU {gpu.index}: {gpu.name or 'unknown name'}", parent)
        self.index = gpu.index
        self.catalog_label = QLabel(self._catalog_text(gpu))
        self.catalog_label.setWordWrap(True)
        self.memory_bar = _bar()
        self.util_label, self.temp_label, self.power_label = QLabel(), QLabel(), QLabel()
        form = QFormLayout()
        form.addRow("Memory", self.memory_bar)
        form.addRow("Utilization", self.util_label)
        form.addRow("Temperature", self.temp_label)
        form.addRow("Power", self.power_label)
        self.process_label = QLabel()
        self.process_table = QTableWidget(0, 4)
        self.process_table.setHorizontalHeaderLabels(["PID", "Process", "GPU memory", "Type"])
        self.process_table.verticalHeader().hide()
        self.process_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.process_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.process_table.setWordWrap(False)
        header = self.process_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.addWidget(self.catalog_label)
        layout.addLayout(form)
        layout.addWidget(self.process_label)
        layout.addWidget(self.process_table)
        layout.addStretch(1)
        self._processes: object = _UNSET  # what the table shows; _UNSET: nothing yet
        self.update_gpu(gpu)

    @staticmethod
    def _catalog_text(gpu: Gpu) -> str:
        spec = catalog_entry(gpu)
        extra = []
        if gpu.compute_capability is not None:
            extra.append(f"Compute capability {gpu.compute_capability[0]}.{gpu.compute_capability[1]}")
        if gpu.mig_enabled is not None:
            extra.append(f"MIG {'on' if gpu.mig_enabled else 'off'}")
        if spec is not None:
            head = f"Catalog: {spec.name}"
        elif gpu.memory_total:
            head = f"Not in the catalog: plans use the speed and price of {nearest_spec(gpu.memory_total).name}"
        else:
            head = "Not in the catalog"
        # Two lines: a long catalog name plus the extras would wrap mid-phrase in a narrow card.
        return "\n".join([head, " · ".join(extra)]) if extra else head

    def update_gpu(self, gpu: Gpu) -> None:
        _show_memory(self.memory_bar, gpu.memory_used, gpu.memory_total)
        _set(self.util_label, NA if gpu.utilization_gpu is None else f"{gpu.utilization_gpu} %")
        _set(self.temp_label, NA if gpu.temperature_c is None else f"{gpu.temperature_c} °C")
        _set(self.power_label, power_text(gpu.power_w, gpu.power_limit_w))
        if gpu.processes != self._processes:  # frozen dataclasses: one tuple comparison per second
            self._processes = gpu.processes
            self._show_processes(gpu.processes)

    def _show_processes(self, processes: tuple[GpuProcess, ...] | None) -> None:
        table = self.process_table
        if processes is None:
            self.process_label.setText("Processes: the driver refused the list (see the notes below)")
            table.hide()
            return
        if not processes:
            self.process_label.setText("Processes: none")
            table.hide()
            return
        self.process_label.setText(f"Processes: {len(processes)}")
        rows = sorted(processes, key=lambda p: (p.used_memory is None, -(p.used_memory or 0), p.pid))
        table.setRowCount(len(rows))
        for r, p in enumerate(rows):
            cells = (str(p.pid), p.name or "(not visible here)", _gib(p.used_memory), p.kind)
            for c, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                if c in (0, 2):
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 2 and p.used_memory is None:
                    cell.setToolTip(WDDM_TIP)
                table.setItem(r, c, cell)
        shown = min(len(rows), MAX_PROCESS_ROWS)
        height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
        table.setFixedHeight(height + sum(table.rowHeight(r) for r in range(shown)))
        table.show()

    def process_rows(self) -> list[tuple[str, ...]]:
        """The table as text, row by row (what tests and screen readers see)."""
        t = self.process_table
        if t.isHidden():
            return []
        return [tuple(_text(t.item(r, c)) for c in range(t.columnCount())) for r in range(t.rowCount())]


def _text(item: QTableWidgetItem | None) -> str:
    return item.text() if item is not None else ""


class HostCard(QGroupBox):
    """This machine's RAM (what CPU offload and data loading use) and CPU load."""

    def __init__(self, host: HostInfo, parent: QWidget | None = None) -> None:
        super().__init__("Host", parent)
        cores = f"{host.cpu_count} logical cores" if host.cpu_count else "cores unknown"
        self.cpu_model_label = QLabel(" · ".join(x for x in (host.cpu_model, cores) if x))
        self.cpu_model_label.setWordWrap(True)
        self.memory_bar = _bar()
        self.cpu_label = QLabel()
        form = QFormLayout()
        form.addRow("RAM", self.memory_bar)
        form.addRow("CPU", self.cpu_label)
        layout = QVBoxLayout(self)
        layout.addWidget(self.cpu_model_label)
        layout.addLayout(form)
        layout.addStretch(1)
        self.update_host(host)

    def update_host(self, host: HostInfo) -> None:
        used = None if host.ram_total is None or host.ram_available is None else host.ram_total - host.ram_available
        _show_memory(self.memory_bar, used, host.ram_total)
        parts = [] if host.cpu_percent is None else [f"{host.cpu_percent:.0f} % busy"]
        if host.load_average is not None:
            parts.append(f"load {host.load_average:.2f}")
        _set(self.cpu_label, " · ".join(parts) or NA)
