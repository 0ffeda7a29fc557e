"""The Plan page's panels under the chart: recommendation, model-size table, time and cost.

They only render what planner.recommend and planner.gui.plan_extras computed.
"""

from __future__ import annotations

import html

from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QPushButton, QTableWidget, QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget

from planner.gui.plan_extras import CostRow, SizesTable
from planner.recommend import Recommendation

FITS = QColor(46, 160, 67, 90)  # translucent: readable over light and dark bases
MISSES = QColor(218, 54, 51, 70)


def _item(text: str, tip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if tip:
        item.setToolTip(tip)
    return item


class RecommendationPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QTextBrowser()  # long explanations and alternatives scroll instead of clipping
        self.text.setOpenExternalLinks(False)
        self.text.setHtml("Computing the recommendation...")
        self.use_button = QPushButton("Use this plan")
        self.use_button.setToolTip("Fill the Train page with this configuration (Ctrl+3 to go there).")
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.use_button)

    def show_recommendation(self, rec: Recommendation) -> None:
        parts = [f"<p>{html.escape(rec.explanation)}</p>"]
        if rec.alternatives:
            items = "".join(f"<li>{html.escape(a.text)}</li>" for a in rec.alternatives)
            parts.append(f"<p>What would fit:</p><ul>{items}</ul>")
        self.text.setHtml("".join(parts))


class SizesPanel(QTableWidget):
    def show_table(self, table: SizesTable, gpu_gib: float) -> None:
        self.setRowCount(len(table.rows))
        self.setColumnCount(len(table.columns))
        self.setHorizontalHeaderLabels(list(table.columns))
        for c, note in enumerate(table.column_notes):
            self.horizontalHeaderItem(c).setToolTip(note)
        self.setVerticalHeaderLabels([label for label, _ in table.rows])
        for r, (label, cells) in enumerate(table.rows):
            for c, cell in enumerate(cells):
                verdict = "fits" if cell.fits else "does not fit"
                item = _item(f"{cell.device_used_gib:,.1f}", f"{label}, {table.columns[c]}: "
                             f"{cell.device_used_gib:.1f} GiB, {verdict} on {gpu_gib:g} GiB\n{table.column_notes[c]}".strip())
                item.setBackground(QBrush(FITS if cell.fits else MISSES))
                self.setItem(r, c, item)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


COST_HEADERS = ("GPU", "fits", "GiB", "tokens/s", "hours", "kWh", "$", "price")


class CostPanel(QTableWidget):
    def show_rows(self, rows: tuple[CostRow, ...]) -> None:
        self.setColumnCount(len(COST_HEADERS))
        self.setHorizontalHeaderLabels(list(COST_HEADERS))
        self.setRowCount(len(rows))
        self.verticalHeader().hide()
        for r, row in enumerate(rows):
            name = f"{row.count} x {row.gpu}" if row.count > 1 else row.gpu
            values = (name, "yes" if row.fits else "no", f"{row.device_used_gib:.1f}", f"{row.tokens_per_second:,.0f}",
                      f"{row.hours:,.1f}", f"{row.energy_kwh:,.1f}",
                      "-" if row.cost_usd is None else f"{row.cost_usd:,.2f}", row.price_note)
            for c, text in enumerate(values):
                item = _item(text, row.price_note)
                if c == 1:
                    item.setBackground(QBrush(FITS if row.fits else MISSES))
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
