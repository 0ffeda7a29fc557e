"""The Runs page: every run under the runs folder, what became of it, and its charts replayed.

Reading is ``planner.runs`` (Qt-free); this page only renders and asks. The table refreshes on
``AppState.run_changed`` and on a 2 s timer while visible; the timer re-reads only directories
whose files changed (plus running ones: a killed trainer changes no file). A selected run's full
history loads on a worker thread (histories reach 100 MB); while it runs, only appended lines
are read on later ticks.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSortFilterProxyModel, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from planner.accuracy import measured, summary_line, write_csv
from planner.errors import PlannerError
from planner.gui.common.worker import LatestOnly
from planner.gui.runs.chart import Replay, ReplayChart
from planner.gui.runs.export_dialog import ExportDialog
from planner.gui.runs.model import (
    COLUMN,
    SORT_ROLE,
    RunsTableModel,
    fmt_duration,
    fmt_gib,
    predicted_for,
    status_text,
)
from planner.gui.state import AppState
from planner.runs import EventReader, RunError, RunScanner, RunSummary, delete_run

REFRESH_MS = 2000


def _load(path: Path) -> tuple[Path, EventReader, Replay]:
    """Worker-thread side of a replay: the whole history, and a reader positioned at its end."""
    reader, replay = EventReader(path), Replay()
    replay.add(reader.read_new())
    return path, reader, replay


class RunsPage(QWidget):
    """Past and present runs: status, loss, measured vs predicted memory; resume, open, delete."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.root = state.runs_root
        self.scanner = RunScanner()
        # Dialogs and the desktop are attributes so tests answer them without blocking.
        self.confirm: Callable[[RunSummary], bool] = self._ask_delete
        """Asked before deleting a run; True deletes."""
        self.choose_folder: Callable[[Path], Path | None] = self._pick_folder
        self.choose_csv: Callable[[Path], Path | None] = self._pick_csv
        """Asked for the file "Export measurements" writes (the dialog confirms an overwrite)."""
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self._replay_path: Path | None = None
        self._reader: EventReader | None = None
        self._replay: Replay | None = None

        self.root_edit = QLineEdit(str(self.root))
        self.root_edit.setReadOnly(True)
        self.choose_button = QPushButton("Choose\u2026")
        self.choose_button.setToolTip("Where the Train page creates runs and this page looks for them.")
        self.refresh_button = QPushButton("Refresh")
        top = QHBoxLayout()
        top.addWidget(QLabel("Runs folder:"))
        top.addWidget(self.root_edit, 1)
        top.addWidget(self.choose_button)
        top.addWidget(self.refresh_button)

        self.model = RunsTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COLUMN["Started"], Qt.SortOrder.DescendingOrder)  # newest first
        rows = self.table.verticalHeader()
        rows.hide()
        rows.setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setMaximumSectionSize(320)  # a long Hub id is elided, not allowed to push the rest away
        header.setStretchLastSection(True)
        self.empty_label = QLabel()
        self.empty_label.setWordWrap(True)
        self.accuracy_label = QLabel()
        self.accuracy_label.setWordWrap(True)
        self.accuracy_label.setToolTip("Finished runs (completed or stopped) with a measured and a predicted peak "
                                       "allocated. error = predicted / measured - 1: negative when the run "
                                       "needed more than predicted.")
        self.export_button = QPushButton("Export measurements\u2026")
        self.export_button.setToolTip("Write the finished runs as rows of measurements.csv (the estimator's "
                                      "reference table's columns).")
        self.open_button = QPushButton("Open folder")
        self.train_button = QPushButton("Show in Train")
        self.delete_button = QPushButton("Delete\u2026")
        self.model_button = QPushButton("Export model\u2026")
        self.model_button.setToolTip("Write the trained adapter, or the adapter merged into its base, to a new folder "
                                     "with a model card: each choice with its disk size and cost per token.")
        buttons = QHBoxLayout()
        for button in (self.open_button, self.train_button, self.model_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        self.message = QLabel()
        self.message.setWordWrap(True)
        listing = QWidget()
        listing_layout = QVBoxLayout(listing)
        listing_layout.setContentsMargins(0, 0, 0, 0)
        listing_layout.addWidget(self.empty_label)
        listing_layout.addWidget(self.accuracy_label)
        listing_layout.addWidget(self.table, 1)
        listing_layout.addLayout(buttons)
        listing_layout.addWidget(self.message)

        self.details = QLabel()
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setWordWrap(True)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setFixedWidth(260)
        self.chart = ReplayChart()
        replay = QWidget()
        replay_layout = QHBoxLayout(replay)
        replay_layout.setContentsMargins(0, 0, 0, 0)
        replay_layout.addWidget(self.details)
        replay_layout.addWidget(self.chart, 1)
        # The table gets the full width (eleven columns); the replay panel sits under it.
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(listing)
        split.addWidget(replay)
        split.setSizes([10, 9])  # proportions: Qt scales them to the space there is
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        self.loader = LatestOnly(self)
        self.loader.done.connect(self._replay_loaded)
        self.loader.failed.connect(lambda exc: self.message.setText(f"Cannot read the history: {exc}"))
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.choose_button.clicked.connect(self._choose_root)
        self.refresh_button.clicked.connect(lambda: self.refresh(force=True))
        self.open_button.clicked.connect(self.open_folder)
        self.train_button.clicked.connect(self.show_in_train)
        self.delete_button.clicked.connect(self.delete_selected)
        self.model_button.clicked.connect(self.export_model)
        self.export_dialog: ExportDialog | None = None
        self.export_button.clicked.connect(self.export_measurements)
        state.run_changed.connect(lambda path: self.refresh(changed=Path(path)))
        self.refresh()
        if self.model.rowCount():
            self.table.selectRow(0)  # the newest run: the page opens on something to look at

    # -- listing ----------------------------------------------------------------------------
    def refresh(self, changed: Path | None = None, force: bool = False) -> None:
        """Re-list the runs folder; ``changed`` (a run_changed path) and ``force`` bypass the cache."""
        root = self.state.runs_root  # the Train page or another window may have moved it
        if root != self.root or force:
            self.root, self.scanner = root, RunScanner()
            self.root_edit.setText(str(root))
        selected = self.selected()
        self.model.set_runs(self.scanner.scan(root, frozenset({changed}) if changed else frozenset()))
        if selected is not None and self.selected() is None:
            self.select_path(selected.path)  # a reset (a run appeared or went) drops the selection
        count = self.model.rowCount()
        self.empty_label.setText(f"No runs in {html.escape(str(root))} yet: start one on the Train page, "
                                 "or choose the folder that holds them.")
        self.empty_label.setVisible(count == 0)
        self.accuracy_label.setText(summary_line(self.model.runs))
        self.accuracy_label.setVisible(count > 0)
        self.export_button.setEnabled(bool(measured(self.model.runs)))
        now = self.selected()
        if (now.path if now else None) != self._replay_path:
            self._selection_changed()  # the selected run was deleted (a reset emits no selection signal)
        else:
            self._update_selection_views()
        self._follow_live_run()

    def selected(self) -> RunSummary | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.runs[self.proxy.mapToSource(rows[0]).row()]

    def select_path(self, path: Path) -> bool:
        row = self.model.row_of(Path(path))
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.selectionModel().select(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                           | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)
        return True

    def set_root(self, path: Path) -> None:
        """Look for runs in another folder, and remember it (the Train page creates runs there)."""
        self.state.set_runs_root(Path(path))
        self.refresh(force=True)

    def _choose_root(self) -> None:
        chosen = self.choose_folder(self.root)
        if chosen is not None:
            self.set_root(chosen)

    def _pick_folder(self, start: Path) -> Path | None:
        chosen = QFileDialog.getExistingDirectory(self, "Runs folder", str(start))
        return Path(chosen) if chosen else None

    # -- the selected run -------------------------------------------------------------------
    def _selection_changed(self, *_: object) -> None:
        run = self.selected()
        self._update_selection_views()
        path = run.path if run else None
        if path == self._replay_path:
            return
        self._replay_path, self._reader, self._replay = path, None, None
        self.chart.clear()
        if path is not None:
            self.loader.submit(lambda: _load(path))

    def _replay_loaded(self, result: tuple[Path, EventReader, Replay]) -> None:
        path, reader, replay = result
        if path != self._replay_path:
            return
        self._reader, self._replay = reader, replay
        self.chart.show_replay(replay)

    def _follow_live_run(self) -> None:
        """The selected run's chart grows by the lines appended since the last tick (an open,
        a seek and an empty read when nothing changed; a run that just ended gets its last steps)."""
        if self._reader is None or self._replay is None:
            return
        new = self._reader.read_new()
        if new:
            self._replay.add(new)
            self.chart.show_replay(self._replay)

    def _update_selection_views(self) -> None:
        run = self.selected()
        for button in (self.open_button, self.train_button, self.delete_button, self.model_button):
            button.setEnabled(run is not None)
        self.chart.setVisible(run is not None)  # empty axes would only look like a run with no data
        if run is None:
            self.details.setText("Select a run to replay its loss and memory.")
            self.train_button.setText("Show in Train")
            return
        self.train_button.setText("Resume\u2026" if run.resumable else "Show in Train")
        self.train_button.setToolTip(f"Continue from {run.checkpoint.name} on the Train page." if run.resumable
                                     and run.checkpoint else "Open this run on the Train page.")
        self.delete_button.setEnabled(run.status != "running")
        self.delete_button.setToolTip("Stop the run before deleting it." if run.status == "running" else "")
        facts = [f"<b>{html.escape(run.name)}</b>", html.escape(status_text(run)),
                 html.escape(" \u00b7 ".join(x for x in (run.model, run.method) if x))]
        if run.steps is not None:
            facts.append(f"{run.steps} steps" + (f" of {run.max_steps}" if run.max_steps else ""))
        if run.peak_alloc_bytes and run.compared_bytes:
            phase = f" (in {html.escape(run.peak_alloc_phase)})" if run.peak_alloc_phase else ""
            facts.append(f"peak allocated {fmt_gib(run.peak_alloc_bytes)} measured{phase}, "
                         f"{fmt_gib(run.compared_bytes)} predicted{html.escape(predicted_for(run))}")
        if run.peak_kind == "host_rss" and run.peak_measured_bytes:
            facts.append(f"host RSS {fmt_gib(run.peak_measured_bytes)} (Python + torch, not comparable)")
        if run.runtime_s is not None:
            facts.append(f"ran {fmt_duration(run.runtime_s)}")
        if run.checkpoint is not None:
            facts.append(f"latest complete checkpoint: {html.escape(run.checkpoint.name)}")
        if run.error:
            facts.append(f"<span style='color:#d83b3b'>{html.escape(run.error)}</span>")
        self.details.setText("<br>".join(facts))
        self.details.setToolTip(str(run.path))

    # -- actions ----------------------------------------------------------------------------
    def open_folder(self) -> None:
        run = self.selected()
        if run is not None:
            self.open_url(QUrl.fromLocalFile(str(run.path)))

    def show_in_train(self) -> None:
        """The Train page decides what to offer: resume from the checkpoint, re-attach, or replay."""
        run = self.selected()
        if run is not None:
            self.state.open_run.emit(str(run.path))
            self.state.page_requested.emit("train")

    def export_model(self) -> None:
        """The export dialog for the selected run (window-modal, returns at once)."""
        run = self.selected()
        if run is None:
            return
        try:
            self.export_dialog = ExportDialog(run.path, self)
        except PlannerError as exc:
            self.message.setText(f"Not exported: {exc}")
            return
        self.export_dialog.exported.connect(lambda out: self.message.setText(f"Exported to {out}."))
        self.export_dialog.open()

    def delete_selected(self) -> None:
        run = self.selected()
        if run is None or not self.confirm(run):
            return
        try:
            kept = delete_run(run.path)
        except (RunError, OSError) as exc:
            self.message.setText(f"Not deleted: {exc}")
        else:
            names = ", ".join(p.name for p in kept[:3]) + (", ..." if len(kept) > 3 else "")
            self.message.setText(f"Deleted {run.name}." if not kept else
                                 f"Deleted what the run wrote in {run.name}; "
                                 f"kept {len(kept)} file(s) of yours: {names}")
        self.refresh(changed=run.path)

    def export_measurements(self) -> None:
        """Write the finished runs as measurements.csv rows to a file the user picks."""
        path = self.choose_csv(self.root / "measurements.csv")
        if path is None:
            return
        try:
            written = write_csv(self.model.runs, path, force=True)  # the save dialog asked about replacing
        except PlannerError as exc:
            self.message.setText(f"Not exported: {exc}")
        else:
            self.message.setText(f"Exported {written} measurement(s) to {path}.")

    def _pick_csv(self, start: Path) -> Path | None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Export measurements", str(start), "CSV files (*.csv)")
        return Path(chosen) if chosen else None

    def _ask_delete(self, run: RunSummary) -> bool:
        answer = QMessageBox.question(
            self, "Delete run", f"Delete {run.name}: its checkpoints, adapter, metrics and config? Files the "
            f"trainer did not write stay.\n\n"
            f"{run.path}", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # -- visibility -------------------------------------------------------------------------
    def showEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        self.refresh()
        self.timer.start()
        super().showEvent(event)  # type: ignore[arg-type]

    def hideEvent(self, event: object) -> None:  # noqa: N802
        self.timer.stop()  # nobody is looking: run_changed still refreshes
        super().hideEvent(event)  # type: ignore[arg-type]
