"""The Train page: the run's form on the left; status, progress, controls and live charts on the right.

Training runs in a subprocess (:class:`RunProcess`); its events are folded into a Qt-free
:class:`RunModel`, and a ~10 Hz timer redraws the charts only when the model changed. The page
never imports torch: ``python -c "import planner.gui.train.page"`` loads none of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QScrollArea, QVBoxLayout, QWidget

from planner.gui.common.run_process import RunProcess
from planner.gui.state import AppState
from planner.gui.train.demo import DemoBuilder
from planner.gui.train.dialogs import OomDialog
from planner.gui.train.fields import (
    FieldError,
    config_text,
    launch_file,
    new_run_dir,
    resolve_paths,
    validate,
)
from planner.gui.train.follow import RunFollower, open_history, read_config
from planner.gui.train.form import TrainForm
from planner.gui.train.gpus import detected_gpus, env_prefix, launch_env, mismatch_note, resume_gpus
from planner.gui.train.panel import RunPanel, RunViews
from planner.gui.train.run_model import RunModel, nvml_sampler
from trainer.protocol import Event

FRAME_MS = 100
"""Chart refresh period (10 Hz): smooth enough, and a redraw happens only after new data."""


class TrainPage(QWidget):
    """Launch a real run, watch loss and memory against the prediction, stop, resume, recover."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.model = RunModel()
        self.process = RunProcess(self)
        self.oom_dialog: OomDialog | None = None
        self.device_memory_sampler: Callable[[int], int | None] | None = nvml_sampler()
        """Trainer pid -> the GPU bytes NVML charges it, sampled at 1 Hz while a run lives; None
        when NVML sees no GPU (then the chart shows torch's peaks and RSS only)."""
        self._output_auto = True  # the run dir follows model and method until the user types one
        self._auto_key: tuple[str, str] | None = None
        self._stopping = False
        self._pending_restart = False
        self.launched: Path | None = None
        """The temporary config file of the run being launched, removed when its trainer ends."""
        self._valid = False
        self._drawn = -1
        self._ticks = 0
        self.demo = DemoBuilder(self)
        self.follower: RunFollower | None = None
        """Set while an opened run trains in the background (not our child): its file is followed."""
        self._build()
        self.form.changed.connect(self._form_changed)
        self.form.output_edited.connect(lambda: setattr(self, "_output_auto", False))
        self.form.output_new.clicked.connect(self.new_output_dir)
        self.form.demo_button.clicked.connect(self.make_demo)
        self.demo.ready.connect(self._demo_ready)
        self.demo.failed.connect(self._demo_failed)
        self.panel.start_button.clicked.connect(self.start)
        self.panel.stop_button.clicked.connect(self.stop_and_save)
        self.panel.cancel_button.clicked.connect(self.cancel_run)
        self.panel.checkpoint_button.clicked.connect(lambda: self._command("checkpoint"))
        self.panel.resume_button.clicked.connect(self.resume)
        self.process.event.connect(self._on_event)
        self.process.log.connect(self.views.log_view.appendPlainText)
        self.process.finished.connect(self._on_finished)
        self.timer = QTimer(self)
        self.timer.setInterval(FRAME_MS)
        self.timer.timeout.connect(self._tick)
        state.plan_to_train.connect(self.use_plan)
        state.open_run.connect(self.open_run)
        self._form_changed()
        self._redraw()

    def _build(self) -> None:
        self.form = TrainForm(detected_gpus())
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(460)

        self.panel = RunPanel()
        self.views = RunViews()
        right = QVBoxLayout()
        right.addWidget(self.panel)
        right.addWidget(self.views, 1)
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
        error = self.form.input_problem() or validate(fields)
        self.form.show_error(error)
        # the GPU choice has its own message under the checkboxes, shown alongside
        self._valid = error is None and not self.form.devices.error()
        self.views.config_preview.setPlainText(config_text(fields))
        self._update_buttons()

    def _set_output(self, path: Path) -> None:
        self.form.output_edit.setText(str(path))

    def new_output_dir(self) -> None:
        """A fresh run directory (also after a run, so the next Start never reuses one)."""
        self._output_auto, self._auto_key = True, None
        self._form_changed()

    def use_plan(self, values: dict) -> None:
        """"Use this plan" from the Plan page: its fields fill the form; model and data stay if unset.
        A plan for more GPUs than this machine has gets all of them, and the banner says so."""
        self.form.set_fields({k: v for k, v in values.items() if k != "output_dir"})
        if self.is_running():
            return  # the banner belongs to the run
        if note := mismatch_note(int(values.get("num_processes") or 1), self.form.devices.present):
            self._set_banner(note, "info")
        else:
            self.panel.show_model(self.model, self.process.tail)  # an earlier plan's note goes

    # -- running -----------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self) -> bool:
        """Write the config next to the run dir and launch the trainer; False if invalid or busy."""
        if self.is_running():
            return False
        self._stop_following()  # its charts make way for the new run; it keeps training
        fields = self.fields()
        error = self.form.input_problem() or validate(fields)
        if error is not None:
            self.form.show_error(error)
            return False
        if self.form.devices.error():
            return False  # already shown under the GPU checkboxes
        run_dir = Path(fields["output_dir"])
        try:
            path = launch_file(config_text(fields))
        except OSError as exc:
            self.form.show_error(FieldError("", f"cannot write the launch config: {exc}"))
            return False
        self._forget_launch_file()
        self.launched = path
        self.model = RunModel()
        devices = self.form.devices
        env = launch_env(devices.present, devices.chosen())
        self.model.devices = devices.chosen()
        self.views.log_view.clear()
        self.views.log_view.appendPlainText(f"$ {env_prefix(env)}{sys.executable} -m trainer run --config {path}")
        self._launch(str(run_dir), lambda: self.process.start(path, env))
        return True

    def resume(self) -> bool:
        """Relaunch the shown run with ``--resume``; its charts continue where they stopped."""
        if self.is_running() or not self.model.resumable:
            return False
        run_dir = str(self.model.run_dir)
        processes = read_config(Path(run_dir)).get("num_processes", 1)
        devices = self.form.devices
        gpus = resume_gpus(devices.present, devices.chosen(), processes if isinstance(processes, int) else 1)
        env = launch_env(devices.present, gpus)
        self.model.devices = gpus
        self.views.log_view.appendPlainText(f"$ {env_prefix(env)}{sys.executable} -m trainer run --resume {run_dir}")
        self._launch(run_dir, lambda: self.process.resume(run_dir, env))
        return True

    def _launch(self, run_dir: str, how: Callable[[], None]) -> None:
        self.model.begin(run_dir)
        self._stopping = False
        self.form.setEnabled(False)
        self.views.tabs.setCurrentWidget(self.views.log_view)
        how()
        self.timer.start()
        self._redraw()

    def _command(self, command: str) -> None:
        if self.process.send(command):
            self.views.log_view.appendPlainText(f"> {command}")

    def stop_and_save(self) -> None:
        """Ask for a resumable checkpoint and an end. The trainer finishes this even if the app closes."""
        if self.follower is not None and self.follower.stop():
            self._stopping = True
            self._set_banner(f"Stopping the background run (SIGTERM to pid {self.follower.pid})...", "info")
            self._update_buttons()
        elif self.is_running():
            self._ask_to_end("stop", "Stopping: saving a checkpoint at the end of this step...")

    def cancel_run(self) -> None:
        """End without saving (the trainer still writes its end event and run.json)."""
        if self.is_running():
            self._ask_to_end("cancel", "Cancelling: the run ends after this step, without saving...")

    def _ask_to_end(self, command: str, banner: str) -> None:
        """Send ``stop`` or ``cancel`` to the running trainer and say so while it finishes its step."""
        self._command(command)
        self._stopping = True
        self.process.release()
        self._set_banner(banner, "info")
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
            self.views.log_view.appendPlainText(f"checkpoint saved: step {event['step']} -> {event['path']}")
        elif event.kind == "error":
            self._redraw()  # the message now, not at the next frame
            if event["type"] == "oom":
                self._show_oom()
        if event.kind in ("start", "end"):
            self._update_buttons()

    def _forget_launch_file(self) -> None:
        """The trainer has read it (and copied it into its run directory) by the time it ends."""
        if self.launched is not None:
            self.launched.unlink(missing_ok=True)
            self.launched = None

    def _on_finished(self, exit_code: int, status: str) -> None:
        self._forget_launch_file()
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
        """Load a run's config into the form and replay its metrics.jsonl into the charts. A run still
        training in the background (an earlier session detached it) is then followed live."""
        if self.is_running():
            self._set_banner("A run is training here: stop it or let it finish before opening another.", "error")
            return
        self._stop_following()
        path = Path(run_dir)
        config = read_config(path)
        if config:
            self.form.set_fields({k: v for k, v in config.items() if k != "output_dir"})
            self.new_output_dir()
        self.model, self.follower = open_history(path)
        if self.follower is not None:
            self.timer.start()
        self.views.log_view.clear()
        self.views.log_view.appendPlainText(f"replayed {path / 'metrics.jsonl'} "
                                      f"({self.model.torn_lines} torn or foreign lines skipped)")
        self._redraw()

    def _follow(self) -> None:
        """Fold what the background trainer appended; stop when it ended or died."""
        assert self.follower is not None
        for event in self.follower.poll():
            self.model.fold(event)
        # liveness reads the run's files and the process table: every 2 s is plenty
        if self.model.end is not None or (self._ticks % 20 == 0 and not self.follower.alive()):
            run_dir = str(self.follower.run_dir)
            self._stop_following()
            self.state.run_changed.emit(run_dir)

    def _stop_following(self) -> None:
        if self.follower is None:
            return
        self.follower = None
        self.timer.stop()
        self._stopping = False
        self.model.background_pid = None
        if self.model.end is None:
            self.model.status = "orphaned"  # died without an end: resumable from its checkpoint
        self.model.revision += 1
        self._redraw()

    # -- demo ----------------------------------------------------------------------------------------
    def make_demo(self) -> None:
        """Build the offline demo under ``<runs root>/demo`` (``demo-mixtral``, ...) in a subprocess,
        then fill the form from it."""
        arch = self.form.demo_arch.currentData()
        out = self.state.runs_root / ("demo" if arch == "llama" else f"demo-{arch}")
        self.demo.start(out, arch)
        self.form.demo_button.setEnabled(False)
        self.form.demo_arch.setEnabled(False)
        self.form.demo_button.setText("Building demo...")
        self._set_banner(f"Building the demo model in {out} (a few seconds)...", "info")
        self._update_buttons()

    def _demo_ready(self, config: dict, output: str) -> None:
        self.views.log_view.appendPlainText(output)
        self._demo_done()
        self.form.set_fields({k: v for k, v in config.items() if k != "output_dir"})
        self.new_output_dir()
        self._set_banner(f"Demo ready: a tiny {self.form.demo_arch.currentText()}, 2000 chat examples and QLoRA "
                         "settings. Press Start.", "done")

    def _demo_failed(self, message: str) -> None:
        self._demo_done()
        self._set_banner(message, "error")

    def _demo_done(self) -> None:
        self.form.demo_button.setEnabled(True)
        self.form.demo_arch.setEnabled(True)
        self.form.demo_button.setText("Make demo model")
        self._update_buttons()

    # -- drawing -------------------------------------------------------------------------------------
    def _tick(self) -> None:
        self._ticks += 1
        if self.follower is not None:
            self._follow()
        pid = self.process.pid
        if self.device_memory_sampler and pid and self.is_running() and self._ticks % 10 == 0:
            used = self.device_memory_sampler(pid)  # 1 Hz: NVML is cheap but not free
            if used:
                self.model.fold_device_memory(used)
        if self.model.revision != self._drawn:
            self._redraw()

    def _redraw(self) -> None:
        self._drawn = self.model.revision
        self.views.charts.show_model(self.model)
        self.panel.show_model(self.model, self.process.tail, keep_banner=self._stopping and self.model.end is None)
        self._update_buttons()

    def _set_banner(self, text: str, kind: str) -> None:
        self.panel.set_banner(text, kind)

    def _update_buttons(self) -> None:
        live = self.is_running()
        self.panel.start_button.setEnabled(not live and self._valid and not self.demo.is_running())
        # a background run (not our child) has no stdin: SIGTERM, which means stop, is all it takes
        self.panel.stop_button.setEnabled((live or self.follower is not None) and not self._stopping)
        self.panel.cancel_button.setEnabled(live)
        self.panel.checkpoint_button.setEnabled(live and not self._stopping and self.model.status == "running")
        self.panel.resume_button.setEnabled(not live and self.model.resumable)
