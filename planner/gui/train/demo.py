""""Make demo model": ``python -m trainer make-demo --out DIR --arch A`` in a QProcess, then its run.json.

The demo needs torch to build, so it never runs in the GUI process, and never on the GUI thread:
QProcess reports through the event loop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

TAIL_LINES = 8


class DemoBuilder(QObject):
    ready = Signal(dict, str)
    """(the demo's run config as TrainConfig fields, make-demo's output)."""
    failed = Signal(str)
    """What went wrong, with the last lines of make-demo's output."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._proc: QProcess | None = None

    def is_running(self) -> bool:
        return self._proc is not None

    def stop(self, wait_ms: int = 10_000) -> None:
        """End a build (the window is closing): SIGTERM, on which make-demo removes its temporary
        folders and exits; SIGKILL only if it does not within ``wait_ms``. Nothing is reported."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for signal in (proc.finished, proc.errorOccurred):
            signal.disconnect()  # the page may be gone by the time it ends: no callback into it
        proc.terminate()
        if not proc.waitForFinished(wait_ms):
            proc.kill()
            proc.waitForFinished(1000)
        proc.deleteLater()

    def start(self, out: Path, arch: str = "llama") -> None:
        if self._proc is not None:
            return
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("HF_HUB_OFFLINE", "1")  # the demo is built from code: nothing to download
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.finished.connect(lambda code, _status: self._done(proc, out, code))
        proc.errorOccurred.connect(lambda err: self._done(proc, out, -1)
                                   if err == QProcess.ProcessError.FailedToStart else None)
        self._proc = proc
        proc.start(sys.executable, ["-m", "trainer", "make-demo", "--out", str(out), "--arch", arch])

    def _done(self, proc: QProcess, out: Path, code: int) -> None:
        if self._proc is not proc:
            return  # FailedToStart and finished can both arrive
        self._proc = None
        output = bytes(proc.readAll().data()).decode("utf-8", errors="replace").strip()
        proc.deleteLater()
        try:
            config = json.loads((out / "run.json").read_text(encoding="utf-8")) if code == 0 else None
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict):
            self.ready.emit(config, output)
        else:
            tail = "\n".join(output.splitlines()[-TAIL_LINES:]) or proc.errorString()
            self.failed.emit(f"make-demo failed (exit code {code}):\n{tail}")
