"""Run a pure function off the GUI thread and deliver only the newest result.

Edits arrive faster than slow computations finish; each call gets a generation number and a
result is dropped when a newer call has started since (no stale flashes, no queue build-up).
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Task(QRunnable):
    def __init__(self, owner: "LatestOnly", generation: int, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.owner, self.generation, self.fn = owner, generation, fn

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as exc:  # delivered to the GUI, which shows it; never kills the pool thread
            result, error = None, exc
        self.owner._finished.emit(self.generation, result, error)


class LatestOnly(QObject):
    done = Signal(object)
    """The newest call's result."""
    failed = Signal(object)
    """The newest call raised this exception."""
    _finished = Signal(int, object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._generation = 0
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._finished.connect(self._deliver)

    def submit(self, fn: Callable[[], Any]) -> None:
        self._generation += 1
        self.pool.start(_Task(self, self._generation, fn))

    def _deliver(self, generation: int, result: Any, error: Any) -> None:
        if generation != self._generation:
            return
        if error is not None:
            self.failed.emit(error)
        else:
            self.done.emit(result)

    def wait(self, msecs: int = 30000) -> bool:
        return self.pool.waitForDone(msecs)
