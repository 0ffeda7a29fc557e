"""The trainer subprocess: ``python -m trainer run`` in a QProcess, events in, commands out.

The GUI never imports torch: training runs in a child process, whose stdout carries protocol
events (JSON lines, decoded here as they arrive) and whose stderr carries human logs. Nothing
here blocks: QProcess reports through the event loop.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, Signal

from trainer.protocol import COMMANDS, ProtocolError, decode

TAIL_LINES = 30
"""stderr lines kept for a crash report (the log pane keeps more)."""


class RunProcess(QObject):
    event = Signal(object)
    """A decoded ``trainer.protocol.Event``."""
    log = Signal(str)
    """One stderr line (or a stdout line that is not an event)."""
    finished = Signal(int, str)
    """(exit code, status). Status is the ``end`` event's status, else "orphaned" (or "failed" after
    an error event). The code is negative (-signal) for a process killed by a signal."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._proc: QProcess | None = None
        self._out = bytearray()
        self._err = bytearray()
        self._end_status: str | None = None
        self._error_seen = False
        self._detached = False
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.pid: int | None = None

    # -- launching -------------------------------------------------------------------------------
    def start(self, config_path: str | Path, env: Mapping[str, str] | None = None) -> None:
        """``env``: variables on top of this process's (the GPUs: ``CUDA_VISIBLE_DEVICES``)."""
        self._launch(["run", "--config", str(config_path)], env or {})

    def resume(self, run_dir: str | Path, env: Mapping[str, str] | None = None) -> None:
        self._launch(["run", "--resume", str(run_dir)], env or {})

    def _launch(self, args: list[str], extra: Mapping[str, str]) -> None:
        if self.is_running():
            raise RuntimeError("a trainer is already running in this RunProcess")
        self._out.clear()
        self._err.clear()
        self.tail.clear()
        self._end_status, self._error_seen, self._detached = None, False, False
        proc = QProcess(self)
        proc.setProcessEnvironment(trainer_environment(extra))
        if hasattr(QProcess, "UnixProcessParameters") and sys.platform != "win32":
            # its own session: closing the terminal the app was started from does not SIGHUP the run
            params = QProcess.UnixProcessParameters()
            params.flags = QProcess.UnixProcessFlag.CreateNewSession
            proc.setUnixProcessParameters(params)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        proc.started.connect(lambda: setattr(self, "pid", int(proc.processId())))
        self._proc = proc
        self.pid = None
        proc.start(sys.executable, ["-m", "trainer", *args])

    # -- control ---------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.state() != QProcess.ProcessState.NotRunning

    def send(self, command: str) -> bool:
        """Write a protocol command (stop, cancel, checkpoint) to the trainer's stdin."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        return self._write_line(command)

    def _write_line(self, line: str) -> bool:
        if not self.is_running():
            return False
        assert self._proc is not None
        ok = self._proc.write(f"{line}\n".encode()) > 0
        # QProcess writes from the event loop; when the app is about to quit (stop & save on close)
        # there is no next iteration. A few bytes into a pipe: this returns at once.
        self._proc.waitForBytesWritten(1000)
        return ok

    def kill(self) -> None:
        """SIGKILL: no chance to save (the last complete checkpoint stays loadable)."""
        if self.is_running():
            assert self._proc is not None
            self._proc.kill()

    def release(self) -> None:
        """Let the trainer outlive this object and the app. Qt's QProcess destructor SIGKILLs a
        running child; re-parented to the main thread's QThread object, which Qt never deletes
        before the process exits, it is never destroyed, so a run told to stop (or left to train)
        finishes on its own when the window closes."""
        if self.is_running():
            assert self._proc is not None
            app = QCoreApplication.instance()
            if app is not None:
                self._proc.setParent(app.thread())

    def detach(self) -> None:
        """Stop reporting; the trainer keeps training and its run directory records everything.

        The pipes are still drained while the app lives: a full 64 KiB pipe would block the
        trainer's next write. Once the app exits its writes fail and it carries on (EventSink
        ignores a broken stdout; stdin EOF only ends its command reader)."""
        if not self.is_running():
            return
        proc = self._proc
        assert proc is not None
        self.release()
        self._detached = True
        for sig in (proc.readyReadStandardOutput, proc.readyReadStandardError, proc.finished, proc.errorOccurred,
                    proc.started):
            sig.disconnect()
        proc.readyReadStandardOutput.connect(proc.readAllStandardOutput)
        proc.readyReadStandardError.connect(proc.readAllStandardError)
        self._proc = None

    # -- reading ---------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self._proc is not None
        self._out += bytes(self._proc.readAllStandardOutput().data())
        for line in _take_lines(self._out):
            self._stdout_line(line)

    def _stdout_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = decode(line)
        except ProtocolError:
            # a library that printed to stdout anyway: show it rather than lose it
            self._log_line(f"[stdout] {line}")
            return
        if event.kind == "end":
            self._end_status = str(event["status"])
        elif event.kind == "error":
            self._error_seen = True
        self.event.emit(event)

    def _read_stderr(self) -> None:
        assert self._proc is not None
        self._err += bytes(self._proc.readAllStandardError().data())
        for line in _take_lines(self._err):
            self._log_line(line)

    def _log_line(self, line: str) -> None:
        self.tail.append(line)
        self.log.emit(line)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        proc = self._proc
        if proc is None:
            return
        # the last bytes may arrive with the exit, and a torn final line has no newline: flush both
        self._read_stdout()
        self._read_stderr()
        for buf, handle in ((self._out, self._stdout_line), (self._err, self._log_line)):
            if buf:
                handle(buf.decode("utf-8", errors="replace").rstrip("\r"))
                buf.clear()
        crashed = status == QProcess.ExitStatus.CrashExit
        exit_code = -code if crashed else code  # Qt reports the signal number; Python's convention is -N
        result = self._end_status or ("failed" if self._error_seen else "orphaned")
        self._proc = None
        proc.deleteLater()
        self.finished.emit(exit_code, result)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._proc is not None:
            message = f"could not start {sys.executable}: {self._proc.errorString()}"
            self._log_line(message)
            proc, self._proc = self._proc, None
            proc.deleteLater()
            self.finished.emit(-1, "orphaned")


def trainer_environment(extra: Mapping[str, str] | None = None) -> QProcessEnvironment:
    """This process's environment, set up for the trainer, with ``extra`` on top."""
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONUNBUFFERED", "1")  # events must arrive as they happen, not per 8 KiB
    env.insert("TOKENIZERS_PARALLELISM", "false")
    for key, value in (extra or {}).items():
        env.insert(key, value)
    return env


def _take_lines(buf: bytearray) -> list[str]:
    """Remove and return the complete lines in ``buf``; a partial last line stays for the next read."""
    end = buf.rfind(b"\n")
    if end < 0:
        return []
    chunk = bytes(buf[: end + 1])
    del buf[: end + 1]
    return [line.rstrip("\r") for line in chunk.decode("utf-8", errors="replace").split("\n")[:-1]]
