"""Entry point of the desktop app: ``python -m planner gui [--page NAME] [--screenshot PNG]``."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from planner.gui.window import PAGE_KEYS, MainWindow


def _application() -> QApplication:
    # Reuse an existing instance (pytest-qt's, or an embedding host's): Qt allows only one.
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Fine-Tune Planner")
    return app


def run(page: str = "plan", screenshot: str | Path | None = None) -> int:
    """Open the window on ``page``; with ``screenshot``, save it as PNG and return instead.

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
        # Two passes: the first lays the widgets out, the second lets pyqtgraph paint at that size.
        app.processEvents()
        app.processEvents()
        saved = window.grab().save(str(screenshot), "PNG")
    finally:
        window.close()
        window.deleteLater()
    if not saved:
        print(f"error: cannot write screenshot to {screenshot}", file=sys.stderr)
        return 2
    return 0
