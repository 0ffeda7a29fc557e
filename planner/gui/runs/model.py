"""The Runs page's table: one row per ``RunSummary``; this module only formats.

The sort role carries raw values (bytes, seconds, epoch time) so a proxy sorts numbers as
numbers; the display role is what a person reads (GiB, "12 min 05 s", local time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from planner.accuracy import grade
from planner.runs import RunSummary
from planner.units import GiB, MiB

SORT_ROLE = Qt.ItemDataRole.UserRole
# Mid-tone colours: legible as text on light and on dark bases.
STATUS_COLOURS: dict[str, str] = {
    "completed": "#2e9e44", "running": "#2f7fd1", "stopped": "#c28a00", "orphaned": "#e8710a",
    "failed": "#d83b3b", "cancelled": "#8a8a8a", "unknown": "#8a8a8a",
}
RATIO_COLOURS: dict[str, str] = {"good": STATUS_COLOURS["completed"], "fair": STATUS_COLOURS["stopped"],
                                 "poor": STATUS_COLOURS["failed"]}
"""The Ratio cell by :func:`planner.accuracy.grade`: green within 10% of the prediction, amber
within 25%, red beyond (the status column's green, amber and red)."""

_Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()
"""The invisible root: a table's rows and columns hang from it."""


def status_text(s: RunSummary, resumable: bool = True) -> str:
    """What the status says: the PID of a live trainer, the gone one of an orphan; the table
    leaves out "resumable" (the widest cell; the details and the Resume button say it)."""
    text = s.status
    if s.status == "running" and s.pid is not None:
        text = f"running (PID {s.pid})"
    elif s.status == "orphaned" and s.pid is not None:
        text = f"orphaned (PID {s.pid} gone)"
    return text + (", resumable" if s.resumable and resumable else "")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def fmt_gib(n: int | None) -> str:
    """GiB to 0.01, or MiB to 0.1 below 1 GiB: a CPU run's tensors (tens of MiB) stay readable."""
    if n is None:
        return ""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def _steps(s: RunSummary) -> str:
    if s.steps is None:
        return ""
    return f"{s.steps} / {s.max_steps}" if s.max_steps else str(s.steps)


def _measured(s: RunSummary) -> str:
    """Peak allocated, the kind the prediction is (never the host RSS: that is in the tooltip)."""
    return fmt_gib(s.peak_alloc_bytes)


def _ratio(s: RunSummary) -> str:
    return "" if s.ratio is None else f"{s.ratio:.2f}\u00d7"


def ratio_tip(s: RunSummary) -> str | None:
    """What the ratio compares: measured peak allocated against predicted allocated, and when."""
    if s.ratio is None or s.peak_alloc_bytes is None:
        return None
    what = "live tensor bytes on the CPU" if s.device == "cpu" else "torch.cuda.max_memory_allocated"
    phase = f", reached in {s.peak_alloc_phase}" if s.peak_alloc_phase else ""
    verdict = ("needed more than predicted" if s.ratio > 1 else "needed less than predicted" if s.ratio < 1
               else "exactly as predicted")
    return (f"measured peak allocated {fmt_gib(s.peak_alloc_bytes)} ({what}{phase})\n"
            f"/ predicted peak allocated {fmt_gib(s.compared_bytes)}{predicted_for(s)} = {s.ratio:.3f}: {verdict}")


def predicted_for(s: RunSummary) -> str:
    """Which batch the compared prediction is for, when it is not the plan's (a padded batch)."""
    if s.peak_shape is None or s.predicted_at_peak_bytes in (None, s.predicted_peak_bytes):
        return ""
    rows, length = s.peak_shape
    return (f" for the batch at the peak, {rows} \u00d7 {length:,} tokens (the plan at max_seq_len: "
            f"{fmt_gib(s.predicted_peak_bytes)})")


def _started(s: RunSummary) -> str:
    if not s.started:
        return ""
    when = time.localtime(s.started)
    # this year's runs need no year: the column stays narrow enough for the table to fit
    return time.strftime("%b %d, %H:%M" if when.tm_year == time.localtime().tm_year else "%Y-%m-%d", when)


Column = tuple[str, Callable[[RunSummary], str], Callable[[RunSummary], Any]]
COLUMNS: tuple[Column, ...] = (
    ("Run", lambda s: s.name, lambda s: s.name),
    ("Status", lambda s: status_text(s, resumable=False), lambda s: s.status),
    ("Model", lambda s: s.model or "", lambda s: s.model or ""),
    ("Method", lambda s: s.method or "", lambda s: s.method or ""),
    ("Steps", _steps, lambda s: s.steps if s.steps is not None else -1),
    ("Loss", lambda s: "" if s.final_loss is None else f"{s.final_loss:.4f}",
     lambda s: s.final_loss if s.final_loss is not None else float("inf")),
    ("Peak", _measured, lambda s: s.peak_alloc_bytes or 0),
    ("Predicted", lambda s: fmt_gib(s.compared_bytes), lambda s: s.compared_bytes or 0),
    ("Ratio", _ratio, lambda s: s.ratio or 0.0),
    ("Duration", lambda s: fmt_duration(s.runtime_s), lambda s: s.runtime_s or 0.0),
    ("Started", _started, lambda s: s.started),
)
COLUMN = {name: i for i, (name, _, _) in enumerate(COLUMNS)}
HEADER_TIPS = {
    "Steps": "optimizer steps done / planned",
    "Loss": "the last training loss",
    "Peak": "measured peak allocated: torch.cuda.max_memory_allocated on a GPU, live tensor bytes on the CPU",
    "Predicted": ("the planner's predicted peak allocated memory for this run's device, for the batch in flight at "
                  "the measured peak (without packing a batch is padded only to its longest sample)"),
    "Ratio": "measured peak allocated / predicted peak allocated (the same kind on a GPU and on the CPU); "
             "green within 10% of 1, amber within 25%, red beyond; above 1 the run needed more than predicted",
    "Duration": "training time so far (the last session's, for a resumed run)",
}


def tooltip(s: RunSummary) -> str:
    lines = [str(s.path), status_text(s)]
    if s.started:
        lines.append("started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started)))
    if s.checkpoint is not None:
        lines.append(f"latest complete checkpoint: {s.checkpoint.name}")
    if (tip := ratio_tip(s)) is not None:
        lines.append(tip)
    if s.peak_kind == "host_rss" and s.peak_measured_bytes:
        lines.append(f"host RSS {fmt_gib(s.peak_measured_bytes)} (Python + torch, not comparable with the prediction)")
    if s.error:
        lines.append(f"error: {s.error}")
    return "\n".join(lines)


class RunsTableModel(QAbstractTableModel):
    """Rows in the order given (newest first); ``set_runs`` updates rows in place when it can."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.runs: list[RunSummary] = []

    def rowCount(self, parent: _Index = _ROOT) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent: _Index = _ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS.get(COLUMNS[section][0])
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        s, column = self.runs[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[column][1](s)
        if role == SORT_ROLE:
            return COLUMNS[column][2](s)
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == COLUMN["Status"]:
                return QColor(STATUS_COLOURS.get(s.status, STATUS_COLOURS["unknown"]))
            if column == COLUMN["Ratio"] and (g := grade(s.ratio)) is not None:
                return QColor(RATIO_COLOURS[g])
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == COLUMN["Ratio"] and (tip := ratio_tip(s)) is not None:
                return tip
            return tooltip(s)
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= COLUMN["Steps"] and column != COLUMN["Started"]:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def set_runs(self, runs: list[RunSummary]) -> None:
        """Same directories in the same order: repaint changed rows only (selection and scroll
        stay put). Otherwise a reset, after which the page reselects by path."""
        if [r.path for r in runs] == [r.path for r in self.runs]:
            old, self.runs = self.runs, list(runs)
            for row, (before, after) in enumerate(zip(old, runs)):
                if before != after:
                    self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.runs = list(runs)
        self.endResetModel()

    def row_of(self, path: Path) -> int | None:
        return next((i for i, r in enumerate(self.runs) if r.path == path), None)
