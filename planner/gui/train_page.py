"""The Train page: the run's form on the left; status, progress, controls and live charts on the right.

Training runs in a subprocess (:class:`RunProcess`); its events are folded into a Qt-free
:class:`RunModel`, and a ~10 Hz timer redraws the charts only when the model changed. The page
never imports torch: ``python -c "import planner.gui.train_page"`` loads none of it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSplitter, QTabWidget,
    QVBoxLayout, QWidget,
)

from planner.gui.run_model import RunModel, fmt_duration, replay
from planner.gui.run_process import PROJECT_ROOT, RunProcess
from planner.gui.state import AppState
from planner.gui.train_charts import TrainCharts
from planner.gui.train_dialogs import OomDialog
from planner.gui.train_fields import (
    FieldError, config_path_for, config_text, new_run_dir, resolve_paths, validate, write_config,
)
from planner.gui.train_form import TrainForm
from planner.units import fmt_count
from trainer.protocol import Event

FRAME_MS = 100
"""Chart refresh period (10 Hz): smooth enough, and a redraw happens only after new data."""
LOG_BLOCKS = 5000
"""Log pane lines kept: a chatty run can't grow the GUI's memory without bound."""
CRASH_TAIL = 8
"""stderr lines quoted in a crash report."""
BANNER = {"ok": "", "error": "background: rgba(211, 47, 47, 0.12); border-left: 4px solid #d32f2f; padding: 6px;",
          "done": "background: rgba(89, 161, 79, 0.12); border-left: 4px solid #59a14f; padding: 6px;",
          "info": "background: rgba(78, 121, 167, 0.12); border-left: 4px solid #4e79a7; padding: 6px;"}


class TrainPage(QWidget):
    """Launch a real run, watch loss and memory against the prediction, stop, resume, recover."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.model = RunModel()
        self.process = RunProcess(self)
        self.oom_dialog: OomDialog | None = None
        self.device_memory_sampler: Callable[[int], int | None] | None = None
        """NVML hook: trainer pid -> its GPU bytes, sampled at 1 Hz while a run lives. None on the CPU.
        With a GPU: ``lambda pid: gpu_process_bytes(planner.hardware.sample().gpus, pid)``."""
        self._output_auto = True  # the run dir follows model and method until the user types one
        self._auto_key: tuple[str, str] | None = None
        self._stopping = False
        self._pending_restart = False
        self._valid = False
        self._drawn = -1
        self._ticks = 0
        self._demo: QProcess | None = None
        self._build()
        self.form.changed.connect(self._form_changed)
        self.form.output_edited.connect(lambda: setattr(self, "_output_auto", False))
        self.form.output_new.clicked.connect(self.new_output_dir)
        self.form.demo_button.clicked.connect(self.make_demo)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop_and_save)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.checkpoint_button.clicked.connect(lambda: self._command("checkpoint"))
        self.resume_button.clicked.connect(self.resume)
        self.process.event.connect(self._on_event)
        self.process.log.connect(self.log_view.appendPlainText)
        self.process.finished.connect(self._on_finished)
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.timeout.connect(self._tick)
        state.plan_to_train.connect(self.use_plan)
        state.open_run.connect(self.open_run)
        self._form_changed()
        self._redraw()

    def _build(self) -> None:
        self.form = TrainForm()
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(460)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)  # trainer messages may hold < and &
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress_label = QLabel()
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextFormat(Qt.TextFormat.PlainText)
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.stop_button = QPushButton("Stop && Save")
        self.stop_button.setToolTip("Save a resumable checkpoint, then end (within one step).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("End now without saving.")
        self.checkpoint_button = QPushButton("Save checkpoint now")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue this run from its last complete checkpoint (--resume).")
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.cancel_button, self.checkpoint_button,
                  self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_label)

        self.charts = TrainCharts()
        self.config_preview = QPlainTextEdit()
        self.config_preview.setReadOnly(True)
        self.config_preview.setToolTip("The exact JSON the trainer reads (written next to the run directory).")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_BLOCKS)
        self.log_view.setPlaceholderText("The trainer's log (stderr) appears here.")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.config_preview, "Config JSON")
        self.tabs.addTab(self.log_view, "Log")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.charts)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([520, 200])  # the JSON preview readable without dragging the handle

        right = QVBoxLayout()
        right.addWidget(self.status_label)
        right.addLayout(progress_row)
        right.addLayout(buttons)
        right.addWidget(self.info_label)
        right.addWidget(split, 1)
        layout = QHBoxLayout(self)
        layout.addWidget(scroll)
        layout.addLayout(right, 1)

    # -- the form ----------------------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        """The config the trainer would get now (absolute paths)."""
        return resolve_paths(self.form.fields(), self.state.runs_root)

    def _form_changed(self) -> None:
        f = self.form.fields()
        key = (f["model"], f["method"])
        if self._output_auto and key != self._auto_key:
            self._auto_key = key
            self._set_output(new_run_dir(self.state.runs_root, f["model"] or "run", f["method"]))
            return  # setting the text emits `changed` again, which validates
        fields = self.fields()
        error = validate(fields)
        self.form.show_error(error)
        self._valid = error is None
        self.config_preview.setPlainText(config_text(fields))
        self._update_buttons()

    def _set_output(self, path: Path) -> None:
        self.form.output_edit.setText(str(path))

    def new_output_dir(self) -> None:
        """A fresh run directory (also after a run, so the next Start never reuses one)."""
        self._output_auto, self._auto_key = True, None
        self._form_changed()

    def use_plan(self, values: dict) -> None:
        """"Use this plan" from the Plan page: its fields fill the form; model and data stay if unset."""
        self.form.set_fields({k: v for k, v in values.items() if k != "output_dir"})

    # -- running -----------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self) -> bool:
        """Write the config next to the run dir and launch the trainer; False if invalid or busy."""
        if self.is_running():
            return False
        fields = self.fields()
        error = validate(fields)
        if error is not None:
            self.form.show_error(error)
            return False
        run_dir = Path(fields["output_dir"])
        path = config_path_for(run_dir)
        try:
            write_config(path, config_text(fields))
        except OSError as exc:
            self.form.show_error(FieldError("output_dir", f"output_dir: cannot write {path}: {exc}"))
            return False
        self.model = RunModel()
        self.log_view.clear()
        self.log_view.appendPlainText(f"$ {sys.executable} -m trainer run --config {path}")
        self._launch(str(run_dir), lambda: self.process.start(path))
        return True

    def resume(self) -> bool:
        """Relaunch the shown run with ``--resume``; its charts continue where they stopped."""
        if self.is_running() or not self.model.resumable:
            return False
        run_dir = str(self.model.run_dir)
        self.log_view.appendPlainText(f"$ {sys.executable} -m trainer run --resume {run_dir}")
        self._launch(run_dir, lambda: self.process.resume(run_dir))
        return True

    def _launch(self, run_dir: str, how: Callable[[], None]) -> None:
        self.model.begin(run_dir)
        self._stopping = False
        self.form.setEnabled(False)
        self.tabs.setCurrentWidget(self.log_view)
        how()
        self.timer.start()
        self._redraw()

    def _command(self, command: str) -> None:
        if self.process.send(command):
            self.log_view.appendPlainText(f"> {command}")

    def stop_and_save(self) -> None:
        """Ask for a resumable checkpoint and an end. The trainer finishes this even if the app closes."""
        if self.is_running():
            self._command("stop")
            self._stopping = True
            self.process.release()
            self._set_banner("Stopping: saving a checkpoint at the end of this step...", "info")
            self._update_buttons()

    def cancel_run(self) -> None:
        """End without saving (the trainer still writes its end event and run.json)."""
        if self.is_running():
            self._command("cancel")
            self._stopping = True
            self.process.release()
            self._update_buttons()

    def detach(self) -> None:
        """Leave the trainer running in the background; its run directory keeps the record."""
        if not self.is_running():
            return
        pid = self.process.pid
        self.process.detach()
        self.timer.stop()
        self.form.setEnabled(True)
        self._set_banner(f"Detached: the trainer (pid {pid}) keeps training in the background; open the run "
                         "from the Runs page to see its progress.", "info")
        self._update_buttons()

    # -- trainer output ------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        self.model.fold(event)
        if event.kind == "start":
            self.state.run_changed.emit(str(event["run_dir"]))
        elif event.kind == "checkpoint":
            self.log_view.appendPlainText(f"checkpoint saved: step {event['step']} -> {event['path']}")
        elif event.kind == "error":
            self._redraw()  # the message now, not at the next frame
            if event["type"] == "oom":
                self._show_oom()
        if event.kind in ("start", "end"):
            self._update_buttons()

    def _on_finished(self, exit_code: int, status: str) -> None:
        self.model.finish(exit_code)
        self._stopping = False
        self.timer.stop()
        self.form.setEnabled(True)
        if self.model.run_dir:
            self.state.run_changed.emit(self.model.run_dir)
        if self._output_auto:
            self.new_output_dir()  # this directory now holds a run
        self._redraw()
        if self._pending_restart:
            self._pending_restart = False
            self.start()

    def _show_oom(self) -> None:
        err = self.model.error or {}
        self.oom_dialog = OomDialog(str(err.get("message")), str(err.get("hint")), self.model.oom_fix(),
                                    self.form.fields(), parent=self)
        self.oom_dialog.apply_requested.connect(self.apply_fix_and_restart)
        self.oom_dialog.open()  # not exec(): the event loop (and the trainer's last lines) keep flowing

    def apply_fix_and_restart(self, changes: dict) -> None:
        """Apply the OOM fix to the form, take a new run dir, and start once the failed run has exited."""
        self.form.set_fields(changes)
        self.new_output_dir()
        if self.is_running():
            self._pending_restart = True
        else:
            self.start()

    # -- opening a finished (or background) run ------------------------------------------------------
    def open_run(self, run_dir: str) -> None:
        """Load a run's config into the form and replay its metrics.jsonl into the charts."""
        if self.is_running():
            self._set_banner("A run is training here: stop it or let it finish before opening another.", "error")
            return
        path = Path(run_dir)
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        if isinstance(config, dict) and config:
            self.form.set_fields({k: v for k, v in config.items() if k != "output_dir"})
            self.new_output_dir()
        try:
            lines = (path / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        self.model = replay(lines)
        self.model.run_dir = str(path)
        pid = _live_pid(path / "trainer.pid")
        if pid is not None and self.model.status == "incomplete":
            self.model.status, self.model.background_pid = "background", pid
        self.log_view.clear()
        self.log_view.appendPlainText(f"replayed {path / 'metrics.jsonl'} ({len(lines)} lines, "
                                      f"{self.model.torn_lines} torn or foreign skipped)")
        self._redraw()

    # -- demo ----------------------------------------------------------------------------------------
    def make_demo(self) -> None:
        """``python -m trainer make-demo --out <runs root>/demo`` in a QProcess (torch stays out of the GUI)."""
        if self._demo is not None:
            return
        out = self.state.runs_root / "demo"
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("HF_HUB_OFFLINE", "1")
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(PROJECT_ROOT))
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.finished.connect(partial(self._demo_finished, proc, out))
        self._demo = proc
        self.form.demo_button.setEnabled(False)
        self.form.demo_button.setText("Building demo...")
        self._set_banner(f"Building the demo model in {out} (a few seconds)...", "info")
        self._update_buttons()
        proc.start(sys.executable, ["-m", "trainer", "make-demo", "--out", str(out)])

    def _demo_finished(self, proc: QProcess, out: Path, code: int, _status: QProcess.ExitStatus) -> None:
        output = bytes(proc.readAll().data()).decode("utf-8", errors="replace")
        self.log_view.appendPlainText(output.rstrip())
        self._demo = None
        proc.deleteLater()
        self.form.demo_button.setEnabled(True)
        self.form.demo_button.setText("Make demo model")
        try:
            config = json.loads((out / "run.json").read_text(encoding="utf-8")) if code == 0 else None
        except (OSError, ValueError):
            config = None
        if not isinstance(config, dict):
            tail = "\n".join(output.strip().splitlines()[-CRASH_TAIL:])
            self._set_banner(f"make-demo failed (exit code {code}):\n{tail}", "error")
            self._update_buttons()
            return
        self.form.set_fields({k: v for k, v in config.items() if k != "output_dir"})
        self.new_output_dir()
        self._set_banner(f"Demo ready in {out}: a tiny Llama, 2000 chat examples, QLoRA settings. Press Start.",
                         "done")

    # -- drawing -------------------------------------------------------------------------------------
    def _tick(self) -> None:
        self._ticks += 1
        pid = self.process.pid
        if self.device_memory_sampler and pid and self.is_running() and self._ticks % 10 == 0:
            used = self.device_memory_sampler(pid)  # 1 Hz: NVML is cheap but not free
            if used:
                self.model.fold_device_memory(used)
        if self.model.revision != self._drawn:
            self._redraw()

    def _redraw(self) -> None:
        m = self.model
        self._drawn = m.revision
        self.charts.show_model(m)
        p = m.progress()
        self.progress.setFormat("%v / %m steps" if m.status != "idle" else "no run yet")
        if m.status == "starting" and not p.total:
            self.progress.setRange(0, 0)  # busy: the trainer is loading
        else:
            self.progress.setRange(0, max(p.total or 0, p.step, 1))
            self.progress.setValue(p.step)
        self.progress_label.setText(f"elapsed {fmt_duration(p.elapsed_s)} · ETA {fmt_duration(p.eta_s)}")
        self.info_label.setText(_run_info(m))
        text = m.status_text()
        kind = {"failed": "error", "crashed": "error", "completed": "done", "idle": "ok"}.get(m.status, "info")
        if m.status == "failed" and m.error and m.error.get("hint"):
            text += f"\nHint: {m.error['hint']}"
        if m.status == "crashed" and self.process.tail:
            text += "\nLast log lines:\n" + "\n".join(list(self.process.tail)[-CRASH_TAIL:])
        if not (self._stopping and m.is_live):
            self._set_banner(text, kind)
        self._update_buttons()

    def _set_banner(self, text: str, kind: str) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(BANNER[kind])

    def _update_buttons(self) -> None:
        live = self.is_running()
        self.start_button.setEnabled(not live and self._valid and self._demo is None)
        self.stop_button.setEnabled(live and not self._stopping)
        self.cancel_button.setEnabled(live)
        self.checkpoint_button.setEnabled(live and not self._stopping and self.model.status == "running")
        self.resume_button.setEnabled(not live and self.model.resumable)


def _run_info(m: RunModel) -> str:
    s = m.start
    if not s:
        return ""
    parts = [f"{s.get('model')}", f"{s.get('method')}",
             f"{fmt_count(int(s.get('params_trainable') or 0))} of {fmt_count(int(s.get('params_total') or 0))} "
             "params trained"]
    if s.get("device"):
        parts.append(f"{s.get('device')} {s.get('precision') or ''}".strip())
    if s.get("data_format"):
        parts.append(f"{s.get('data_format')} data, {s.get('examples')} examples")
    if s.get("resumed_from"):
        parts.append(f"resumed from {Path(str(s['resumed_from'])).name}")
    return " · ".join(parts)


def _live_pid(pid_file: Path) -> int | None:
    """The pid in a run's trainer.pid if that process still exists (a run training in the background)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid
