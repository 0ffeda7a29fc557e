"""The Plan page's chart: one stacked bar per method, segments = breakdown terms, GPU line.

Bar items are created once and only updated with ``setOpts`` (DESIGN.md: charts create their
items once), so a recompute never rebuilds the scene. Totals are placed in pixels, after each
plan and resize: a total the dashed GPU line (or its label) would cross moves above them.
"""

from __future__ import annotations

import html

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from planner.gui.common.chart_style import follow_palette, keep_whole, style_legend, style_plot, text_colour
from planner.gui.plan.model import DEFAULT_GPU_GIB, TERM_LABELS, TERMS, VARIANTS, Plan
from planner.units import fmt_gib

# Tableau 10: a qualitative palette that stays distinguishable on light and dark backgrounds.
# Blue-greens for the model (weights, quant state, adapters), orange-red for training state,
# yellow-pink for what one step allocates, brown-grey for the overheads.
TERM_COLOURS: dict[str, str] = {
    "weights": "#4e79a7",
    "quant_state": "#76b7b2",
    "adapters": "#59a14f",
    "gradients": "#f28e2b",
    "optimizer": "#e15759",
    "paged_optimizer": "#8c2d2f",
    "activations": "#edc948",
    "logits": "#b07aa1",
    "workspace": "#ff9da7",
    "cuda_context": "#9c755f",
    "allocator_slack": "#bab0ac",
}

BAR_WIDTH = 0.6
HEADROOM = 1.12
"""Y range top over the tallest of bars and GPU line, before the totals ask for more."""
LINE_WIDTH = 2
CLEARANCE_PX = 3
"""Space kept between a total and the dashed line or its label."""
MIN_VIEW = (4 * 78, 130)
"""The bars' area never shrinks below this (px): room for four "QLoRA 4-bit" ticks and totals."""
TITLE_POINT_SIZE = 11  # pyqtgraph's PlotItem title size
TITLE_MARGIN_PX = 16
"""The title label's document margins and a little air."""


class ElidedTitle(pg.LabelItem):
    """A plot title that may be narrower than its text: the chart elides the text to the width it
    gets. (A LabelItem makes its text width its minimum, so a long model path would set the
    chart's minimum width, and the window's.)"""

    def updateMin(self) -> None:  # noqa: N802 (pyqtgraph's name)
        super().updateMin()
        self.setMinimumWidth(0)


def _use_elided_title(item: pg.PlotItem) -> None:
    """Put an ElidedTitle where PlotItem keeps its title (``setTitle`` keeps working)."""
    old = item.titleLabel
    item.layout.removeItem(old)
    old.setParentItem(None)
    if old.scene() is not None:
        old.scene().removeItem(old)
    item.titleLabel = ElidedTitle("", size=f"{TITLE_POINT_SIZE}pt", parent=item)
    item.layout.addItem(item.titleLabel, 0, 1)
    item.setTitle(None)


def gpu_key_text(gpu_gib: float) -> str:
    return f"your GPU: {fmt_gib(gpu_gib)}"


class PlanChart(pg.PlotWidget):
    """Stacked GiB bars for the four method variants and a dashed "your GPU" line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent, background=None)
        n = len(VARIANTS)
        self._x = list(range(n))
        self._highlight: tuple[bool, ...] = (False,) * n
        self._plan_top = 0.0
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)  # a fixed comparison: panning only loses the bars
        item.setLabel("left", "GPU memory per GPU (GiB)")
        item.showGrid(y=True, alpha=0.25)
        self.setXRange(-0.5, n - 0.5, padding=0.02)

        self.bars: dict[str, pg.BarGraphItem] = {}
        for term in TERMS:
            bar = pg.BarGraphItem(x=self._x, height=[0.0] * n, y0=[0.0] * n, width=BAR_WIDTH,
                                  brush=TERM_COLOURS[term], name=TERM_LABELS[term])
            item.addItem(bar)
            self.bars[term] = bar

        # Totals above each bar: the number the summary quotes, readable without hovering.
        self.totals = [pg.TextItem(anchor=(0.5, 1.0)) for _ in self._x]
        for text in self.totals:
            item.addItem(text)

        # The GPU's size is named in the legend, not on the line: there it would sit on a bar or a total.
        self.gpu_line = pg.InfiniteLine(pos=DEFAULT_GPU_GIB, angle=0, movable=False)
        item.addItem(self.gpu_line)
        self.gpu_key = pg.PlotDataItem()
        """Never plotted: the legend's sample of the dashed line."""

        # The legend sits in its own layout column right of the plot so it never covers a bar;
        # the GPU first, then the terms top-down in stack order, as the eye reads the bars.
        self.legend = pg.LegendItem(frame=False)
        self.legend.addItem(self.gpu_key, gpu_key_text(DEFAULT_GPU_GIB))
        for term in reversed(TERMS):
            self.legend.addItem(self.bars[term], TERM_LABELS[term])
        for sample, _label in self.legend.items:
            # a click would hide a term and leave a gap in the stack that reads as less memory
            sample.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        # Fixed size: otherwise the grid stretches the legend to the plot's height.
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        item.layout.addItem(self.legend, 2, 3, alignment=Qt.AlignmentFlag.AlignVCenter)
        item.getViewBox().setMinimumSize(*MIN_VIEW)
        item.getViewBox().sigResized.connect(self._layout_text)
        _use_elided_title(item)
        self._title = ""
        """The full title (HTML-escaped); drawn elided to the width there is."""
        self._used: tuple[float, ...] = ()

        # The user's own method: one outline around its whole stack, drawn over the segments.
        self.outline = pg.BarGraphItem(x=self._x, height=[0.0] * n, width=BAR_WIDTH, brush=None,
                                       pens=[pg.mkPen(None)] * n)
        self.outline.setZValue(1)
        item.addItem(self.outline)
        follow_palette(self, self._restyle)
        self._ready = True
        keep_whole(self, item)

    def show_plan(self, plan: Plan, highlight: tuple[bool, ...], gpu_gib: float, title: str) -> None:
        """Update every item in place from a freshly computed plan."""
        self._highlight = highlight
        for term, bar in self.bars.items():
            bar.setOpts(height=list(plan.heights[term]), y0=list(plan.bottoms[term]))
        self.outline.setOpts(height=list(plan.device_used_gib), pens=self._outline_pens())
        for text, used, host in zip(self.totals, plan.device_used_gib, plan.host_gib):
            # what left the GPU for host RAM, under the total it no longer counts in
            text.setText(f"{used:.1f} GiB" + (f"\n+{host:.1f} GiB host" if host else ""))
        self._used = tuple(plan.device_used_gib)
        self.getAxis("bottom").setTicks([list(zip(self._x, plan.labels))])
        self._title = title
        self._plan_top = max(plan.device_used_gib)
        self.set_gpu_gib(gpu_gib)

    def set_gpu_gib(self, gpu_gib: float) -> None:
        self.gpu_line.setValue(gpu_gib)
        label = self.legend.items[0][1]
        if label.text != gpu_key_text(gpu_gib):
            label.setText(gpu_key_text(gpu_gib))
            keep_whole(self, self.getPlotItem(), [self.legend])  # "your GPU: 141 GiB" may widen it
        self._layout_text()

    def _layout_text(self, *_: object) -> None:
        """Y range, totals and title for the plan and the view's current size in pixels."""
        self._show_title()
        height = self.getPlotItem().getViewBox().height()
        top = max(self._plan_top, float(self.gpu_line.value())) * HEADROOM
        for _ in range(3):  # a taller range can free a total from the line: settles in a pass or two
            # every total inside the view: gib * height / top + offset + text height <= height
            need = max([top] + [gib * height / (height - span) for gib, span in
                                ((gib, offset + text.boundingRect().height())
                                 for (gib, offset), text in zip(self._total_anchors(top, height), self.totals))
                                if span < height])
            if need <= top * 1.0001:
                break
            top = need
        self.setYRange(0, top, padding=0)
        for text, x, (gib, offset) in zip(self.totals, self._x, self._total_anchors(top, height)):
            text.setPos(x, gib + (offset * top / height if height > 0 else 0.0))

    def _total_anchors(self, top: float, height: float) -> list[tuple[float, float]]:
        """Where each total's bottom edge goes, as (GiB, pixels above it): on its bar, or just above
        the dashed GPU line when the line would cross the text."""
        if height <= 0 or top <= 0 or not self._used:
            return [(0.0, 0.0)] * len(self.totals)
        gpu = float(self.gpu_line.value())
        line = gpu * height / top
        band = LINE_WIDTH / 2 + CLEARANCE_PX
        anchors = []
        for text, used in zip(self.totals, self._used):
            # the glyphs, not the document margins around them, must stay off the line
            margin = text.textItem.document().documentMargin()
            bottom = used * height / top + margin
            glyph_top = used * height / top + text.boundingRect().height() - margin
            crossed = bottom < line + band and glyph_top > line - band
            anchors.append((gpu, band - margin) if crossed else (used, 0.0))
        return anchors

    def _show_title(self) -> None:
        """The title elided in the middle to the room beside the axis and legend: a label's text
        width is its minimum, so a long model path would otherwise push the legend out of view."""
        item = self.getPlotItem()
        if item is None:  # closing: pyqtgraph has let go of it
            return
        font = QFont(item.titleLabel.item.font())
        font.setPointSizeF(TITLE_POINT_SIZE)
        room = self.viewport().width() - item.getAxis("left").width() - self.legend.width() - TITLE_MARGIN_PX
        plain = html.unescape(self._title)
        elided = QFontMetricsF(font).elidedText(plain, Qt.TextElideMode.ElideMiddle, max(room, 0.0))
        text = html.escape(elided, quote=False) if elided != plain else self._title
        if text != item.titleLabel.text or item.titleLabel.isVisible() != bool(text):
            item.setTitle(text or None)
            # the view sized the plot while the old title was its minimum: size it again
            item.setGeometry(QRectF(self.viewport().rect()))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if getattr(self, "_ready", False):
            self._show_title()

    def bar_heights(self, term: str) -> tuple[float, ...]:
        """Segment heights as drawn (what tests read back)."""
        return tuple(float(h) for h in self.bars[term].opts["height"])

    def _outline_pens(self) -> list[QPen]:
        strong = pg.mkPen(text_colour(self), width=2)
        return [strong if h else pg.mkPen(None) for h in self._highlight]

    def _restyle(self, fg: QColor) -> None:
        """Axes, labels and line in the system palette's text colour; only the segments are fixed."""
        style_plot(self.getPlotItem(), fg)
        style_legend(self.legend, fg)
        dashed = pg.mkPen(fg, width=LINE_WIDTH, style=Qt.PenStyle.DashLine)
        self.gpu_line.setPen(dashed)
        self.gpu_key.setPen(dashed)
        for text in self.totals:
            text.setColor(fg)
        # A hairline in the background colour separates adjacent segments (and frames the swatches).
        hairline = pg.mkPen(self.palette().color(QPalette.ColorRole.Base), width=1)
        for bar in self.bars.values():
            bar.setOpts(pen=hairline)
        self.outline.setOpts(pens=self._outline_pens())

