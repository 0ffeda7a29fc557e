"""What the pages share: the GPU being planned for, where runs live, and hand-offs between pages.

Pages never reach into each other; they talk through this object's signals. Values are the
planner's own frozen dataclasses, so the GUI renders and the planner decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

from planner.runs import DEFAULT_RUNS_ROOT
from planner.targets import GpuTarget


class AppState(QObject):
    gpu_changed = Signal(object)
    """The GPU to plan for changed: a ``GpuTarget`` (NVML-detected, catalog or custom)."""
    plan_to_train = Signal(dict)
    """"Use this plan": ``TrainConfig`` field values for the Train page to fill in."""
    run_changed = Signal(str)
    """A run directory was created, advanced or finished: the Runs page refreshes it."""
    open_run = Signal(str)
    """Show this run directory on the Train page (resume, or replay)."""
    page_requested = Signal(str)
    """Switch the window to this page key."""

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        # an explicit ini file (the same on every OS): tests redirect it with QSettings.setPath
        self.settings = settings or QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                                              "finetune-planner", "Fine-Tune Planner")
        self._gpu: GpuTarget | None = None

    @property
    def gpu(self) -> GpuTarget | None:
        return self._gpu

    def set_gpu(self, gpu: GpuTarget | None) -> None:
        if gpu != self._gpu:
            self._gpu = gpu
            self.gpu_changed.emit(gpu)

    @property
    def runs_root(self) -> Path:
        """Where the app creates run directories (QSettings ``runs/root``)."""
        value: Any = self.settings.value("runs/root", str(DEFAULT_RUNS_ROOT))
        return Path(str(value)).expanduser()

    def set_runs_root(self, path: Path) -> None:
        self.settings.setValue("runs/root", str(path))
