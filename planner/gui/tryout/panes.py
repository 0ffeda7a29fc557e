"""The Try page's widgets that only render: one answering model's transcript, and the memory bars."""

from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QTextCursor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QTextBrowser, QVBoxLayout, QWidget

from planner.gui.common.chart_style import (
    EmptyNote,
    follow_palette,
    legend_below,
    series_colour,
    set_entries,
    style_legend,
    style_plot,
)
from planner.units import GiB, MiB


class AnswerPane(QWidget):
    """One conversation with one answering model (the base, or an adapter): its turns as text,
    its own history for the next turn."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.messages: list[dict[str, str]] = []
        self._answer = ""
        self.who = QComboBox()
        self.who.setToolTip("Which model answers in this pane: the base (adapters off) or an adapter")
        self.stats = QLabel("")
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.transcript = QTextBrowser()
        self.transcript.setPlaceholderText("Answers appear here as they are generated.")
        head = QHBoxLayout()
        head.addWidget(QLabel(title))
        head.addWidget(self.who, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.stats)

    def set_names(self, names: list[str], chosen: str) -> None:
        self.who.clear()
        self.who.addItems(names)
        self.who.setCurrentText(chosen)

    @property
    def name(self) -> str:
        return self.who.currentText()

    def ask(self, prompt: str) -> list[dict[str, str]]:
        """Show the user's turn; returns the conversation to send."""
        self.messages.append({"role": "user", "content": prompt})
        self._answer = ""
        self.transcript.append(f"<p><b>You:</b> {html.escape(prompt)}</p><p><b>{html.escape(self.name)}:</b> </p>")
        return list(self.messages)

    def add_text(self, text: str) -> None:
        self._answer += text
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.transcript.setTextCursor(cursor)

    def finish(self, status: str, new_tokens: int, ttft_s: float | None, tokens_per_s: float | None) -> None:
        self.messages.append({"role": "assistant", "content": self._answer})
        first = f"first token {ttft_s * 1000:.0f} ms" if ttft_s is not None else "no token"
        speed = f", {tokens_per_s:.1f} tokens/s" if tokens_per_s else ""
        self.stats.setText(f"{new_tokens} tokens, {first}{speed}" + (" (stopped)" if status == "stopped" else ""))

    def clear(self) -> None:
        self.messages.clear()
        self._answer = ""
        self.transcript.clear()
        self.stats.clear()


def fmt_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


class MemoryBars(pg.PlotWidget):
    """Predicted against measured: the weights as loaded, and the peak of the last answer."""

    GROUPS = ("weights", "answer peak")
    WIDTH = 0.35

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=None)
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        item.setLabel("left", "MiB")
        item.getViewBox().setMinimumSize(200, 80)
        self.predicted = pg.BarGraphItem(x=[], height=[], width=self.WIDTH, brush=series_colour(0))
        self.measured = pg.BarGraphItem(x=[], height=[], width=self.WIDTH, brush=series_colour(1))
        item.addItem(self.predicted)
        item.addItem(self.measured)
        self.legend = legend_below(item, columns=2)
        set_entries(self.legend, [(self.predicted, "predicted"), (self.measured, "measured")])
        self.empty_note = EmptyNote(item, "load a run")
        self.values: dict[str, tuple[float | None, float | None]] = {}
        follow_palette(self, self._restyle)

    def _restyle(self, fg: QColor) -> None:
        style_plot(self.getPlotItem(), fg)
        style_legend(self.legend, fg)
        self.empty_note.set_colour(fg)

    def show_values(self, predicted: tuple[float | None, float | None],
                    measured: tuple[float | None, float | None]) -> None:
        """(weights, answer peak) bytes each; None where there is no figure (yet)."""
        self.values = {"predicted": predicted, "measured": measured}
        for bars, values, shift in ((self.predicted, predicted, -self.WIDTH / 2), (self.measured, measured,
                                                                                   self.WIDTH / 2)):
            xs = [i + shift for i, v in enumerate(values) if v is not None]
            bars.setOpts(x=xs, height=[v / MiB for v in values if v is not None])
        tops = [v for v in (*predicted, *measured) if v is not None]
        self.empty_note.set_empty(not tops)
        if tops:  # the note clears the axes' ticks while empty, and gives them back as numbers
            self.getPlotItem().getAxis("bottom").setTicks([list(enumerate(self.GROUPS))])
        self.getPlotItem().setXRange(-0.6, len(self.GROUPS) - 0.4, padding=0)
        self.getPlotItem().setYRange(0, max(tops, default=MiB) / MiB * 1.15, padding=0)
