"""Entry point of the desktop app: ``python -m planner gui [--page NAME] [--screenshot PNG]``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QWidget

from planner.gui.common.worker import LatestOnly
from planner.gui.window import PAGE_KEYS, MainWindow

SETTLE_TIMEOUT_S = 30.0
"""The longest a screenshot waits for the window to settle (the recommendation takes ~60 ms)."""
SETTLE_POLL_S = 0.01


def _application() -> QApplication:
    # Reuse an existing instance (pytest-qt's, or an embedding host's): Qt allows only one.
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Fine-Tune Planner")
    return app


def settled(window: QWidget) -> bool:
    """True when nothing already under way would still change what the window shows.

    Pages defer work two ways: a single-shot timer (a debounce, the recommendation's wait for a
    pause in the edits) and a :class:`LatestOnly` worker, whose result-polling timer runs exactly
    while a computation is pending. Repeating timers (live sampling) never end and do not count.
    """
    for timer in window.findChildren(QTimer):
        if timer.isActive() and timer.isSingleShot():
            return False
    return not any(timer.isActive() for worker in window.findChildren(LatestOnly)
                   for timer in worker.findChildren(QTimer))


def settle(window: QWidget, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Process events until :func:`settled` (then lay out and paint once more); False on timeout."""
    app = QApplication.instance()
    deadline = time.monotonic() + timeout_s
    while True:
        app.processEvents()
        if settled(window):
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(SETTLE_POLL_S)  # the worker thread needs the GIL to finish
    # Two passes: the first lays out what the results changed, the second lets pyqtgraph paint at that size.
    app.processEvents()
    app.processEvents()
    return True


def capture(window: QWidget, path: str | Path, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Save ``window`` as a PNG once it has settled (or the timeout passed); False if unwritable."""
    if not settle(window, timeout_s):
        print(f"warning: the window was still busy after {timeout_s:g} s; the screenshot shows it so",
              file=sys.stderr)
    return window.grab().save(str(path), "PNG")


def run(page: str = "plan", screenshot: str | Path | None = None) -> int:
    """Open the window on ``page``; with ``screenshot``, save it as PNG and return instead.

    The screenshot waits for the page to settle: the Plan page's recommendation, computed on a
    worker thread, is shown and not "Computing the recommendation...".
    Returns the process exit code: 0, or 2 for bad input (unknown page, unwritable file).
    """
    if page not in PAGE_KEYS:
        print(f"error: unknown page {page!r}; choose one of: {', '.join(PAGE_KEYS)}", file=sys.stderr)
        return 2
    app = _application()
    window = MainWindow(page)
    window.persist_geometry = screenshot is None
    window.show()
    if screenshot is None:
        return app.exec()
    try:
        saved = capture(window, screenshot)
    finally:
        window.close()
        window.deleteLater()
    if not saved:
        print(f"error: cannot write screenshot to {screenshot}", file=sys.stderr)
        return 2
    return 0
