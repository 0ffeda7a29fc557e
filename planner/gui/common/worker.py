"""Run a pure function off the GUI thread and deliver only the newest result.

Edits arrive faster than slow computations finish; each call replaces the pending one, and a
result is delivered only if no newer call has started since (no stale flashes, no build-up).

Results come back through a plain ``concurrent.futures`` future polled by a GUI-thread timer
that runs only while work is pending: no Python object crosses threads through Qt signals
(PySide6 6.12 miscounts references on that path and can abort at exit).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

# One shared worker thread: not owned by a widget that may be destroyed mid-task.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner-worker")
POLL_MS = 15


class LatestOnly(QObject):
    done = Signal(object)
    """The newest call's result."""
    failed = Signal(object)
    """The newest call raised this exception."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._future: Future | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._check)

    def submit(self, fn: Callable[[], Any]) -> None:
        if self._future is not None:
            self._future.cancel()  # not started yet: never runs; running: its result is ignored
        self._future = _EXECUTOR.submit(fn)
        self._poll.start()

    def _check(self) -> None:
        future = self._future
        if future is None or not future.done():
            return
        self._poll.stop()
        self._future = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed.emit(error)
        else:
            self.done.emit(future.result())

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the pending call finishes (benchmarks and tests); True if it did."""
        future = self._future
        if future is None:
            return True
        try:
            future.exception(timeout=msecs / 1000)
        except TimeoutError:
            return False
        except Exception:  # cancelled
            pass
        self._check()
        return True
