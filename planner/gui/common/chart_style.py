"""Charts follow the system palette (light or dark): the axis, title and legend text take the
window's text colour, also after a live light/dark switch (:func:`follow_palette`); only the
data series keep fixed colours. One place for every page's charts,
and for the rules that keep them readable at any window size: legends outside the data area,
views never smaller than their layout, empty plots that say so."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGraphicsView, QGraphicsWidget, QSizePolicy, QWidget

from planner.units import GiB, fmt_bytes

# Tableau 10, as the Plan page: distinguishable on light and dark backgrounds.
SERIES_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f")
LEGEND_TEXT_SIZE = "8pt"
LEGEND_ROW = 4
"""PlotItem's grid uses rows 0-3 (title, top axis, view, bottom axis): the row under the x axis is free."""
EMPTY_TEXT = "no data yet"


def series_colour(i: int, taken: tuple[str, ...] = ()) -> str:
    """The ``i``-th series colour, skipping those the chart already gives other curves."""
    used = {c.lower() for c in taken}
    free = [c for c in SERIES_COLOURS if c.lower() not in used] or list(SERIES_COLOURS)
    return free[i % len(free)]


def text_colour(widget: QWidget) -> QColor:
    """The palette's text colour: what axes, titles, legends and the chart's own lines are drawn in."""
    return widget.palette().color(QPalette.ColorRole.WindowText)


def follow_palette(chart: QWidget, restyle: Callable[[QColor], None]) -> None:
    """Call ``restyle(text colour)`` now and after every palette change of ``chart`` (the desktop
    switched between light and dark). Call it once the items it styles exist: Qt also sends a
    palette change from inside the widget's constructor."""
    _PaletteHook(chart, restyle)
    restyle(text_colour(chart))


class _PaletteHook(QObject):
    def __init__(self, chart: QWidget, restyle: Callable[[QColor], None]) -> None:
        super().__init__(chart)  # lives as long as the chart
        self.restyle = restyle
        chart.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self.restyle(text_colour(watched))  # the new palette is in place when the event arrives
        return False


def style_plot(item: pg.PlotItem, fg: QColor) -> None:
    """Axes (and the title, if any) in ``fg``."""
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(fg)
        axis.setTextPen(fg)
    if item.titleLabel.text:
        item.titleLabel.setAttr("color", fg)
        item.setTitle(item.titleLabel.text)


def style_legend(legend: pg.LegendItem, fg: QColor) -> None:
    legend.setLabelTextColor(fg)
    for _sample, label in legend.items:
        label.setText(label.text)  # setAttr alone does not re-render the label


def legend_below(plot: pg.PlotItem, columns: int) -> pg.LegendItem:
    """A legend in its own row under the x axis, ``columns`` entries side by side.

    Outside the data area it can never cover a curve, a point or a dashed line (nor be struck
    through by one), whatever the data does. It becomes ``plot.legend``, so ``plot(name=...)``
    still lists a curve in it.
    """
    legend = pg.LegendItem(frame=False, colCount=columns, labelTextSize=LEGEND_TEXT_SIZE)
    # Fixed: the grid would otherwise stretch it to the row and spread the entries apart.
    legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
    legend.layout.setContentsMargins(0, 2, 0, 2)  # not pyqtgraph's 9 px: a row that is empty is ~empty
    plot.layout.addItem(legend, LEGEND_ROW, 1, alignment=Qt.AlignmentFlag.AlignHCenter)
    plot.legend = legend
    return legend


def keep_whole(view: QGraphicsView, item: QGraphicsWidget, changed: Iterable[QGraphicsWidget] = ()) -> None:
    """Never let ``view`` shrink below what ``item``'s layout needs.

    A graphics layout squeezed below its minimum is not shrunk but cut off at the view's edge
    ("allocator slac"); as a widget minimum, the window's layouts keep the room instead. The
    minimum follows the layout from then on (axes widen for their tick labels as they paint); call
    it again with the legends whose entries ``changed`` to have the new minimum at once.
    """
    if not any(f.item is item for f in view.findChildren(_Whole)):
        _Whole(view, item)
    for widget in changed:
        # Qt refreshes the cached size hints above a changed widget only on the next layout event:
        # clear them up to the item now
        while widget is not None:
            widget.updateGeometry()
            if widget is item:
                break
            widget = widget.parentWidget()
    _hold(view, item)


def _hold(view: QGraphicsView, item: QGraphicsWidget) -> None:
    need = item.effectiveSizeHint(Qt.SizeHint.MinimumSize)
    frame = 2 * view.frameWidth()
    view.setMinimumSize(math.ceil(need.width()) + frame, math.ceil(need.height()) + frame)


class _Whole(QObject):
    """Re-applies the minimum whenever Qt redoes the item's layout (its size hints changed)."""

    def __init__(self, view: QGraphicsView, item: QGraphicsWidget) -> None:
        super().__init__(view)
        self.view, self.item = view, item
        item.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.LayoutRequest:
            _hold(self.view, self.item)  # the hints are marked stale by now: this reads fresh ones
        return False


class EmptyNote:
    """"no data yet" in the middle of a plot that has nothing to draw, and no axis numbers.

    An empty pyqtgraph view is labelled 0..1 on both axes: a range that reads as data.
    """

    def __init__(self, plot: pg.PlotItem, text: str = EMPTY_TEXT) -> None:
        self.plot = plot
        # a child of the view box, not a data item: it stays centred whatever the range
        self.label = pg.LabelItem(text, size="10pt", parent=plot.getViewBox())
        self.label.anchor(itemPos=(0.5, 0.5), parentPos=(0.5, 0.5))
        self.empty: bool | None = None
        self.set_empty(True)

    def set_empty(self, empty: bool) -> None:
        if empty == self.empty:
            return
        self.empty = empty
        self.label.setVisible(empty)
        for name in ("left", "bottom"):
            # no ticks: no numbers and no grid lines at made-up positions
            self.plot.getAxis(name).setTicks([] if empty else None)

    def set_colour(self, fg: QColor) -> None:
        self.label.setText(self.label.text, color=fg)


def set_entries(legend: pg.LegendItem, entries: list[tuple[pg.GraphicsObject, str]]) -> bool:
    """List exactly these (item, name) pairs, in this order; True if the legend changed.

    Rebuilt only when they differ (a curve gains its first point, a label changes), not per frame,
    so a curve with no data is never listed ("eval loss" with no eval yet).
    """
    if [(sample.item, label.text) for sample, label in legend.items] == entries:
        return False
    removed = [part for pair in legend.items for part in pair]
    legend.clear()
    # pyqtgraph 0.14 / PySide6 6.11: a cleared legend's samples and labels are left to Python's
    # cycle collector, which may destroy them later in the middle of some other layout pass
    # (LabelItem.sizeHint on a cleared instance, then "pure virtual method called"): delete them now
    for part in removed:
        shiboken6.delete(part)
    for item, name in entries:
        legend.addItem(item, name)
        # a click would hide a curve, which then reads as "no data"
        legend.items[-1][0].setAcceptedMouseButtons(Qt.MouseButton.NoButton)
    return True


def at_peak_batch(planned: int | None, end: Mapping[str, object]) -> tuple[int | None, str]:
    """(the prediction the measured peak compares with, what it is for): the end event's
    prediction for the micro-batch in flight at the peak when it differs from the plan's (the
    Runs page's Ratio tooltip gives the plan's figure beside it)."""
    at_peak, rows, length = (end.get(k) for k in ("predicted_at_peak_bytes", "peak_batch_size", "peak_seq_len"))
    if not (isinstance(at_peak, int) and isinstance(rows, int) and isinstance(length, int)) or at_peak == planned:
        return planned or None, ""
    return at_peak, f" ({rows}\u00d7{length:,})"


RSS_LABEL = "host RSS (Python + torch, not comparable)"
"""The host RSS curve's legend key: beside the GPU figures, never compared with a prediction."""


def rss_key(rss_peak: float, axis_top: float) -> str:
    """The RSS curve's key: :data:`RSS_LABEL`, or, when the axis fits the comparable figures and
    the RSS (a CPU run's whole Python process) runs off its top, how high it is."""
    if rss_peak > axis_top:
        return f"host RSS {fmt_bytes(int(rss_peak))}, off scale (not comparable)"
    return RSS_LABEL


class PredictionLine:
    """The predicted peak: a dashed horizontal line, its number in the legend.

    A label on the line itself would sit on the measured curves it is compared with.
    """

    def __init__(self, plot: pg.PlotItem) -> None:
        self.line = pg.InfiniteLine(angle=0, movable=False)
        self.line.hide()
        plot.addItem(self.line)
        self.key = pg.PlotDataItem()
        """Never plotted: the legend's sample of the dashed line."""
        self.peak_bytes: int | None = None
        self.note = ""

    def set_peak(self, peak_bytes: int | None, shown: bool = True, end: Mapping[str, object] | None = None) -> None:
        """``end``: the run's end event, whose prediction for the batch at the measured peak (a
        batch padded only to its longest sample) replaces the plan's once the run has ended."""
        self.peak_bytes, self.note = at_peak_batch(peak_bytes, end or {})
        if self.peak_bytes:
            self.line.setValue(self.peak_bytes / GiB)
        self.line.setVisible(bool(self.peak_bytes) and shown)

    @property
    def entry(self) -> tuple[pg.PlotDataItem, str]:
        """The legend entry: (key, "predicted 4.00 GiB"), and the batch it is for when not the plan's."""
        return self.entry_of("")

    def entry_of(self, what: str) -> tuple[pg.PlotDataItem, str]:
        """The legend entry naming what is predicted ("allocated", "reserved"...), for a plot with
        more than one prediction line."""
        if not self.peak_bytes:
            return self.key, "no prediction"
        return self.key, f"predicted {what + ' ' if what else ''}{fmt_bytes(self.peak_bytes)}{self.note}"

    def set_colour(self, fg: QColor) -> None:
        dashed = pg.mkPen(fg, width=1.5, style=Qt.PenStyle.DashLine)
        self.line.setPen(dashed)
        self.key.setPen(dashed)
