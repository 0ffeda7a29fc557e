"""The Plan page: the form on the left; on the right the memory chart, then the recommendation,
the model-size table and time and cost.

Estimates are pure Python (tens of microseconds each): the chart, table and cost rows are
recomputed on the GUI thread after a short debounce; only the recommendation (120 options with
their batch and sequence limits, ~60 ms) runs on a worker thread, newest result wins.
"""

from __future__ import annotations

import html
from dataclasses import replace

from PySide6.QtCore import QSignalBlocker, Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from planner.catalog import ModelSpec, resolve_model
from planner.catalog.gpus import find_gpu, memory_text
from planner.errors import PlannerError
from planner.gui.common.worker import LatestOnly
from planner.gui.plan.chart import PlanChart
from planner.gui.plan.extras import cost_rows, sizes_table
from planner.gui.plan.form import PlanForm
from planner.gui.plan.model import FormValues, Plan, compute_plan, my_setup, summary_lines, with_data
from planner.gui.plan.panels import CostPanel, RecommendationPanel, SizesPanel
from planner.gui.plan.precise import PrecisePanel
from planner.gui.state import AppState
from planner.hardware import ram_total
from planner.launch import train_config_fields, why_not_trainable
from planner.lengths import measure_lengths, measured_lengths
from planner.options import TrainSetup
from planner.recommend import Recommendation, recommend
from planner.samples import SampleLengths
from planner.settings import load_prices
from planner.targets import DEFAULT_CATALOG_GPU, GpuTarget, catalog_target, custom_target
from planner.units import GiB, fmt_count, fmt_gib

DEBOUNCE_MS = 30
RECOMMEND_AFTER_MS = 250


class PlanPage(QWidget):
    """Will it fit? Full, LoRA and QLoRA side by side, what to use, how long and how much."""

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.plan: Plan | None = None
        """The last valid result; kept on screen while the form holds an error."""
        self.form = PlanForm()
        self._prices = load_prices()
        """The user's prices, read once: a recompute per keystroke must not re-read (and re-warn
        about) the settings file."""
        self._target = catalog_target(find_gpu(DEFAULT_CATALOG_GPU), 1, self._prices)
        """The GPU planned for: its memory in bytes as the driver reports it is the one that plans
        (the spin box shows it rounded to 0.01 GiB), its name and source label it."""

        self.stale_label = QLabel("The chart still shows the last valid setup.")
        self.stale_label.setWordWrap(True)
        self.stale_label.hide()
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left = QVBoxLayout()
        left.addWidget(scroll, 1)
        left.addWidget(self.stale_label)
        left_widget = QWidget()
        left_widget.setLayout(left)
        left_widget.setFixedWidth(440)

        self.chart = PlanChart()
        self.summary_label = QLabel()
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.chart, 1)
        top_layout.addWidget(self.summary_label)
        self.notes_label = QLabel()
        self.notes_label.setTextFormat(Qt.TextFormat.RichText)
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notes_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        top_layout.addWidget(self.notes_label)
        self.recommendation = RecommendationPanel()
        self.sizes = SizesPanel()
        self.costs = CostPanel()
        self.panels = QTabWidget()
        self.panels.addTab(self.recommendation, "Recommendation")
        self.panels.addTab(self.sizes, "7B..8x22B")
        self.panels.addTab(self.costs, "Time and cost")
        self.precise = PrecisePanel()
        self.panels.addTab(self.precise, "Precise check")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.panels)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        layout = QHBoxLayout(self)
        layout.addWidget(left_widget)
        layout.addWidget(split, 1)

        self.recommender = LatestOnly(self)
        self.recommender.done.connect(self._recommended)
        self.recommender.failed.connect(self._recommend_failed)
        self.recommendation.use_recommended.connect(self.use_plan)
        self.recommendation.use_alternative.connect(self.use_alternative)
        self.recommendation.use_mine.connect(self.use_my_settings)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.recompute)
        self._pending = None
        self._measured_later: FormValues | None = None
        """The form whose data file the pending recommendation measures; the rest is redrawn with it."""
        self._recommend_timer = QTimer(self)
        self._recommend_timer.setSingleShot(True)
        self._recommend_timer.setInterval(RECOMMEND_AFTER_MS)
        self._recommend_timer.timeout.connect(lambda: self._pending and self.recommender.submit(self._pending))
        if state is not None:
            self.form.restore(state.settings)
            state.gpu_changed.connect(self.set_gpu)
            if state.gpu is not None:
                self.set_gpu(state.gpu)
        self.form.gpu_spin.valueChanged.connect(self._gpu_edited)
        if round(self._target.memory_bytes / GiB, 2) != self.form.gpu_spin.value():
            self._gpu_edited()  # a size restored from the last session that is not the default card's
        self._show_gpu()
        self.form.changed.connect(self._schedule)
        self.recompute()  # draw at once, so the first frame (and a screenshot) has bars

    # -- GPU --------------------------------------------------------------------------------
    def set_gpu(self, gpu: GpuTarget | None) -> None:
        if gpu is None:
            return
        self._target = gpu
        with QSignalBlocker(self.form.gpu_spin):  # the Hardware page's GPU, not a user edit
            self.form.gpu_spin.setValue(gpu.memory_bytes / GiB)
        self._show_gpu()
        if gpu.count != self.form.gpus_spin.value():
            self.form.gpus_spin.setValue(gpu.count)
        self._schedule()

    def _gpu_edited(self) -> None:
        self._target = custom_target(self.form.gpu_spin.value(), self.form.gpus_spin.value(), self._prices)
        self._show_gpu()

    def _show_gpu(self) -> None:
        t = self._target
        if t.source == "custom":
            text = f"{t.name} (speed and price of {t.spec.name})"
        elif t.source == "nvml":  # NVML's own total plans, whatever the datasheet says
            text = f"{t.name} · {fmt_gib(t.memory_bytes / GiB)} (nvml: detected here)"
        else:
            text = f"{t.name} · {memory_text(t.spec)} (catalog)"
        self.form.gpu_label.setText(text)

    def gpu_target(self) -> GpuTarget:
        """The planned GPU, as many as the form says."""
        return replace(self._target, count=self.form.gpus_spin.value())

    # -- recompute --------------------------------------------------------------------------
    def _schedule(self, *_: object) -> None:
        self._debounce.start()  # restarts a pending countdown: one recompute per burst

    def recompute(self) -> None:
        # the exact bytes the driver reports, not the spin box's rounded GiB
        values = replace(self.form.values(), gpu_gib=self._target.memory_bytes / GiB)
        data = values.data.strip()
        try:
            if (refused := self.form.input_problem()) is not None:
                raise _FieldProblem(*refused)
            known = measured_lengths(values.model, data) if data else None  # never tokenizes here
            plan, spec = self._show(values, known)
        except (PlannerError, _FieldProblem) as exc:
            # Bad input is the user's to fix: say so beside the field and keep the last valid chart.
            self.form.show_error(str(exc), exc.field, as_is=isinstance(exc, _FieldProblem))
            self.stale_label.setVisible(self.plan is not None)
            self._pending, self._measured_later = None, None  # no recommendation for a form without a setup
            self.recommendation.computing()
            self.recommendation.set_mine("the form holds an error")
            return
        mine = plan.estimates[plan.mine].setup
        gpu = self.gpu_target()
        # The recommendation (~60 ms of Python) waits for a pause in the edits: run during typing it
        # would compete with the GUI thread for the GIL.
        host = ram_total() if gpu.source == "nvml" else None  # this machine's RAM for its own GPU

        def pending() -> Recommendation:
            # the data file is tokenized here, on the worker, once per file as it is
            setup, tokens = with_data(mine, values, measure_lengths(values.model, data) if data else None)
            return recommend(spec, setup, gpu, tokens, values.epochs, values.max_quality, host_memory=host)
        self._pending = pending
        # the chart and the Time and cost tab catch up once the worker has measured the file
        self._measured_later = values if data and known is None else None
        self.recommendation.computing()
        self.recommendation.set_mine(why_not_trainable(mine))
        self._recommend_timer.start()
        if self.state is not None:
            self.form.save(self.state.settings)

    def _show(self, values: FormValues, lengths: SampleLengths | None) -> tuple[Plan, ModelSpec]:
        """Compute and draw everything but the recommendation for ``values`` (with the data file's
        ``lengths`` once measured); raises PlannerError on bad input, drawing nothing."""
        plan = compute_plan(values, lengths)
        spec = resolve_model(values.model)
        table = sizes_table(values, self._target.memory_bytes)
        rows = cost_rows(values, spec, self._target.spec, self._target.memory_bytes,
                         self._prices.electricity_usd_per_kwh, local=self._target.source == "nvml", lengths=lengths)
        self.form.show_error(None)
        self.stale_label.hide()
        self.plan = plan
        highlight = plan.highlight
        # the accumulation is in the form and the notes: in the title it would elide the model's name
        title = (f"{plan.model} · {fmt_count(plan.params_total)} params · "
                 f"batch {values.batch_size} × {values.seq_len:,} tokens")
        self.chart.show_plan(plan, highlight, values.gpu_gib, html.escape(title))
        self.summary_label.setText(self._summary_html(plan, highlight, values.gpu_gib))
        self.notes_label.setText(_notes_html(*plan.notes()))
        self.notes_label.setToolTip("\n".join(plan.stack_notes()))  # the stack's knobs with their sources
        self.sizes.show_table(table, values.gpu_gib)
        self.precise.set_plan(values, plan.estimates[plan.mine])  # like with like: the very setup simulated
        self.costs.show_rows(rows)
        return plan, spec

    def _recommended(self, rec: Recommendation) -> None:
        self.recommendation.show_recommendation(rec)
        values = self._measured_later
        if values is None or (lengths := measured_lengths(values.model, values.data.strip())) is None:
            return
        self._measured_later = None  # the worker measured the data file: redraw with it, recommend nothing again
        try:
            self._show(values, lengths)
        except PlannerError:
            pass  # the model changed on disk meanwhile: the next recompute says what

    def _recommend_failed(self, exc: BaseException) -> None:
        self.recommendation.text.setHtml(html.escape(str(exc)))
        if isinstance(exc, PlannerError) and exc.field == "data":  # the file, beside its field
            self.form.show_error(str(exc), "data")

    def use_plan(self) -> None:
        """The recommended option, exactly, to the Train page."""
        rec = self.recommendation.rec
        if rec is not None and rec.best is not None and self.recommendation.recommended_problem() is None:
            self._to_train(rec.best.setup, self.plan.model if self.plan else self.form.values().model)

    def use_alternative(self, index: int) -> None:
        rec = self.recommendation.rec
        if rec is None or not 0 <= index < len(rec.alternatives):
            return
        alt = rec.alternatives[index]
        if alt.trainable is None:
            self._to_train(alt.setup, alt.model)

    def use_my_settings(self) -> None:
        """The form's own settings, as they are (the recommendation may differ)."""
        if self.plan is not None:
            setup = my_setup(self.form.values())
            if why_not_trainable(setup) is None:
                self._to_train(setup, self.plan.model)

    def _to_train(self, setup: TrainSetup, model: str) -> None:
        if self.state is None:
            return
        values = self.form.values()
        data = {"dataset": values.data.strip()} if values.data.strip() else {}  # the data planned with
        self.state.plan_to_train.emit({**train_config_fields(setup, model, values.epochs), **data})
        self.state.page_requested.emit("train")

    @staticmethod
    def _summary_html(plan: Plan, highlight: tuple[bool, ...], gpu_gib: float) -> str:
        # A table so the numbers line up; "label: rest" lines come from the Qt-free model.
        rows = []
        for line, mine in zip(summary_lines(plan, gpu_gib), highlight):
            label, rest = (html.escape(part) for part in line.split(": ", 1))
            if mine:
                label, rest = f"<b>{label}</b>", f"<b>{rest}</b>"
            rows.append(f"<tr><td>{label}</td><td style='padding-left:12px'>{rest}</td></tr>")
        note = ("<i>device used = what nvidia-smi shows: peak reserved by PyTorch + CUDA context. "
                "Bold: your method.</i>")
        return f"<table cellspacing='1'>{''.join(rows)}</table>{note}"


def _notes_html(warnings: tuple[str, ...], assumptions: tuple[str, ...]) -> str:
    """Warnings first, each on its own line; then the assumptions, run together (tooltips are
    not enough: some change the answer by tens of GiB)."""
    lines = [f"<span style='color:#d32f2f'><b>Warning:</b> {html.escape(w)}</span>" for w in warnings]
    if assumptions:
        lines.append("<i>Assumes: " + "; ".join(html.escape(a) for a in assumptions) + ".</i>")
    return "<br>".join(lines)


class _FieldProblem(Exception):
    """A number box holds text that is not a value: its message goes beside that box."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
