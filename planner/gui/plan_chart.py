"""The Plan page's chart: one stacked bar per method, segments = breakdown terms, GPU line.

Bar items are created once and only updated with ``setOpts`` (DESIGN.md: charts create their
items once), so a recompute never rebuilds the scene.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from planner.gui.plan_model import DEFAULT_GPU_GIB, TERM_LABELS, TERMS, VARIANTS, Plan
from planner.gui.chart_style import style_legend, style_plot

# Tableau 10: a qualitative palette that stays distinguishable on light and dark backgrounds.
# Blue-greens for the model (weights, quant state, adapters), orange-red for training state,
# yellow-pink for what one step allocates, brown-grey for the overheads.
TERM_COLOURS: dict[str, str] = {
    "weights": "#4e79a7",
    "quant_state": "#76b7b2",
    "adapters": "#59a14f",
    "gradients": "#f28e2b",
    "optimizer": "#e15759",
    "activations": "#edc948",
    "logits": "#b07aa1",
    "workspace": "#ff9da7",
    "cuda_context": "#9c755f",
    "allocator_slack": "#bab0ac",
}

BAR_WIDTH = 0.6


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

        self.gpu_line = pg.InfiniteLine(pos=DEFAULT_GPU_GIB, angle=0, movable=False,
                                        label="your GPU: {value:g} GiB",
                                        labelOpts={"position": 0.98, "anchors": [(1, 1), (1, 1)]})
        item.addItem(self.gpu_line)

        # The legend sits in its own layout column right of the plot so it never covers a bar;
        # listed top-down in stack order, as the eye reads the bars.
        self.legend = pg.LegendItem(frame=False)
        for term in reversed(TERMS):
            self.legend.addItem(self.bars[term], TERM_LABELS[term])
        for sample, _label in self.legend.items:
            # a click would hide a term and leave a gap in the stack that reads as less memory
            sample.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        # Fixed size: otherwise the grid stretches the legend to the plot's height.
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        item.layout.addItem(self.legend, 2, 3, alignment=Qt.AlignmentFlag.AlignVCenter)

        # The user's own method: one outline around its whole stack, drawn over the segments.
        self.outline = pg.BarGraphItem(x=self._x, height=[0.0] * n, width=BAR_WIDTH, brush=None,
                                       pens=[pg.mkPen(None)] * n)
        self.outline.setZValue(1)
        item.addItem(self.outline)
        self._apply_palette()
        self._ready = True

    def show_plan(self, plan: Plan, highlight: tuple[bool, ...], gpu_gib: float, title: str) -> None:
        """Update every item in place from a freshly computed plan."""
        self._highlight = highlight
        for term, bar in self.bars.items():
            bar.setOpts(height=list(plan.heights[term]), y0=list(plan.bottoms[term]))
        self.outline.setOpts(height=list(plan.device_used_gib), pens=self._outline_pens())
        for text, x, used in zip(self.totals, self._x, plan.device_used_gib):
            text.setText(f"{used:.1f} GiB")
            text.setPos(x, used)
        self.getAxis("bottom").setTicks([list(zip(self._x, plan.labels))])
        self.getPlotItem().setTitle(title)
        self._plan_top = max(plan.device_used_gib)
        self.set_gpu_gib(gpu_gib)

    def set_gpu_gib(self, gpu_gib: float) -> None:
        self.gpu_line.setValue(gpu_gib)
        # Headroom above the tallest of bars and line so the totals and line label are not clipped.
        top = max(self._plan_top, gpu_gib)
        self.setYRange(0, top * 1.12, padding=0)

    def bar_heights(self, term: str) -> tuple[float, ...]:
        """Segment heights as drawn (what tests read back)."""
        return tuple(float(h) for h in self.bars[term].opts["height"])

    def _outline_pens(self) -> list[QPen]:
        strong = pg.mkPen(self.palette().color(QPalette.ColorRole.WindowText), width=2)
        return [strong if h else pg.mkPen(None) for h in self._highlight]

    def _apply_palette(self) -> None:
        """Axes, labels and line in the system palette's text colour; only the segments are fixed."""
        pal = self.palette()
        fg: QColor = pal.color(QPalette.ColorRole.WindowText)
        style_plot(self.getPlotItem(), fg)
        style_legend(self.legend, fg)
        self.gpu_line.setPen(pg.mkPen(fg, width=2, style=Qt.PenStyle.DashLine))
        self.gpu_line.label.setColor(fg)
        # The label often sits over a bar taller than the card: give it the window's background.
        backdrop = QColor(pal.color(QPalette.ColorRole.Window))
        backdrop.setAlpha(220)
        self.gpu_line.label.fill = pg.mkBrush(backdrop)  # TextItem has no setter for its fill
        self.gpu_line.label.update()
        for text in self.totals:
            text.setColor(fg)
        # A hairline in the background colour separates adjacent segments (and frames the swatches).
        hairline = pg.mkPen(pal.color(QPalette.ColorRole.Base), width=1)
        for bar in self.bars.values():
            bar.setOpts(pen=hairline)
        self.outline.setOpts(pens=self._outline_pens())

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        # Follow a live light/dark switch of the desktop.
        # (Qt also sends one from inside the base constructor, before our items exist.)
        if event.type() == QEvent.Type.PaletteChange and getattr(self, "_ready", False):
            self._apply_palette()
        super().changeEvent(event)
