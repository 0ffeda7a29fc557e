"""The Plan page's panels under the chart: recommendation, model-size table, time and cost.

They only render what planner.recommend and planner.gui.plan.extras computed.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from planner.gui.plan.extras import CostRow, SizesTable
from planner.launch import stack_note, why_not_trainable
from planner.recommend import Recommendation
from planner.units import fmt_gib

FITS = QColor(46, 160, 67, 90)  # translucent: readable over light and dark bases
MISSES = QColor(218, 54, 51, 70)


def _item(text: str, tip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if tip:
        item.setToolTip(tip)
    return item


class RecommendationPanel(QWidget):
    """The recommendation, with a "Use" for exactly what it recommends, one per alternative the
    trainer can run, and a separately labelled one for the form's own settings."""

    use_recommended = Signal()
    use_alternative = Signal(int)
    """The index of the alternative in the shown recommendation."""
    use_mine = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rec: Recommendation | None = None
        """The recommendation on screen; None while (re)computing."""
        self._mine_problem: str | None = "not computed yet"
        self.text = QTextBrowser()  # long explanations and alternatives scroll instead of clipping
        self.text.setOpenLinks(False)  # an alternative's "Use" link is ours to handle
        self.text.anchorClicked.connect(self._anchor)
        self.text.setHtml("Computing the recommendation...")
        self.use_button = QPushButton("Use the recommended plan")
        self.mine_button = QPushButton("Use my settings instead")
        self.use_button.clicked.connect(self.use_recommended)
        self.mine_button.clicked.connect(self.use_mine)
        row = QHBoxLayout()
        row.addWidget(self.use_button, 1)
        row.addWidget(self.mine_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(row)
        self._update_buttons()

    def show_recommendation(self, rec: Recommendation) -> None:
        self.rec = rec
        parts = [f"<p style='color:#d32f2f'><b>Warning:</b> {html.escape(w)}</p>" for w in rec.warnings]
        parts.append(f"<p>{html.escape(rec.explanation)}</p>")
        if rec.best is not None and (note := stack_note(rec.best.setup)) is not None:
            parts.append(f"<p><i>{html.escape(note)}</i></p>")
        if rec.alternatives:
            items = "".join(f"<li>{html.escape(a.text)} {_use_link(i, a.trainable)}</li>"
                            for i, a in enumerate(rec.alternatives))
            parts.append(f"<p>What would fit:</p><ul>{items}</ul>")
        self.text.setHtml("".join(parts))
        self._update_buttons()

    def computing(self) -> None:
        """The form changed: what is on screen no longer answers it, so nothing can be used from it."""
        self.rec = None
        self.text.setHtml("Computing the recommendation...")
        self._update_buttons()

    def set_mine(self, problem: str | None) -> None:
        """Why the form's own settings cannot go to the Train page (a form error, a plan the trainer
        cannot run), or None when they can."""
        self._mine_problem = problem
        self._update_buttons()

    def recommended_problem(self) -> str | None:
        if self.rec is None:
            return "the recommendation is being computed"
        if self.rec.best is None:
            return "nothing fits on this GPU; use one of the alternatives below"
        return why_not_trainable(self.rec.best.setup)

    def _update_buttons(self) -> None:
        problem = self.recommended_problem()
        self.use_button.setEnabled(problem is None)
        self.use_button.setToolTip("Fill the Train page with exactly the recommended configuration: method, "
                                   "quantization, optimizer, micro-batch (accumulation keeps your batch), "
                                   "checkpointing. Ctrl+3 goes there." if problem is None
                                   else f"Not available: {problem}.")
        self.mine_button.setEnabled(self._mine_problem is None)
        self.mine_button.setToolTip("Fill the Train page with the form's own settings, as they are."
                                    if self._mine_problem is None else f"Not available: {self._mine_problem}.")

    def _anchor(self, url: QUrl) -> None:
        if url.scheme() == "use" and url.path().isdigit():
            self.use_alternative.emit(int(url.path()))


def _use_link(index: int, problem: str | None) -> str:
    if problem is None:
        return f"&nbsp;<a href='use:{index}'>Use</a>"
    return f"<i>(the app cannot train this: {html.escape(problem)})</i>"


class SizesPanel(QTableWidget):
    def show_table(self, table: SizesTable, gpu_gib: float) -> None:
        self.setRowCount(len(table.rows))
        self.setColumnCount(len(table.columns))
        self.setHorizontalHeaderLabels(list(table.columns))
        for c, note in enumerate(table.column_notes):
            self.horizontalHeaderItem(c).setToolTip(note)
        self.setVerticalHeaderLabels([label for label, _ in table.rows])
        row_notes = table.row_notes or ("",) * len(table.rows)
        for r, (label, cells) in enumerate(table.rows):
            self.verticalHeaderItem(r).setToolTip(row_notes[r])
            for c, cell in enumerate(cells):
                verdict = "fits" if cell.fits else "does not fit"
                tip = (f"{label}, {table.columns[c]}: {cell.device_used_gib:.1f} GiB, {verdict} on "
                       f"{fmt_gib(gpu_gib)}\n{table.column_notes[c]}\n{row_notes[r]}")
                item = _item(f"{cell.device_used_gib:,.1f}", tip.strip())
                item.setBackground(QBrush(FITS if cell.fits else MISSES))
                self.setItem(r, c, item)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


COST_HEADERS = ("GPU", "fits", "GiB", "tokens/s", "most time", "hours", "kWh", "$", "price")


class CostPanel(QTableWidget):
    def show_rows(self, rows: tuple[CostRow, ...]) -> None:
        self.setColumnCount(len(COST_HEADERS))
        self.setHorizontalHeaderLabels(list(COST_HEADERS))
        self.setRowCount(len(rows))
        self.verticalHeader().hide()
        for r, row in enumerate(rows):
            name = f"{row.count} x {row.gpu}" if row.count > 1 else row.gpu
            term, share = row.time_shares[0] if row.time_shares else ("", 0.0)
            most = f"{term} {share:.0%}" if term else ""
            values = (name, "yes" if row.fits else "no", f"{row.device_used_gib:.1f}", f"{row.tokens_per_second:,.0f}",
                      most, f"{row.hours:,.1f}", f"{row.energy_kwh:,.1f}",
                      "-" if row.cost_usd is None else f"{row.cost_usd:,.2f}", row.price_note)
            every_term = "\n".join(f"{term}: {share:.1%}" for term, share in row.time_shares)
            for c, text in enumerate(values):
                item = _item(text, every_term if COST_HEADERS[c] == "most time" else row.price_note)
                if c == 1:
                    item.setBackground(QBrush(FITS if row.fits else MISSES))
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
