"""The trainer's voice and ears, standard library only: events out (stdout + metrics.jsonl),
commands in (stdin, SIGTERM)."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from trainer.protocol import encode, parse_command


class EventSink:
    """Writes each event line to stdout and appends it to ``<run_dir>/metrics.jsonl``."""

    def __init__(self, metrics_path: Path, out: TextIO | None = None, t0: float | None = None):
        self.t0 = time.monotonic() if t0 is None else t0
        self._out = out or sys.stdout
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        # line-buffered append: a kill can at worst tear the last line, which readers skip; a
        # torn line left by a killed run is closed first so the next event starts a line of its own
        torn = metrics_path.is_file() and metrics_path.stat().st_size > 0 and not _ends_with_newline(metrics_path)
        self._file = open(metrics_path, "a", encoding="utf-8", buffering=1)
        if torn:
            self._file.write("\n")
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> None:
        line = encode(kind, time.monotonic() - self.t0, **fields)
        with self._lock:
            try:
                self._file.write(line + "\n")
            except OSError:  # disk full: the event still reaches the app, which reports the fault
                pass
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError):  # the launcher went away: keep the file going
                pass

    def close(self) -> None:
        self._file.close()


class Commands:
    """Commands from stdin (one word per line) and SIGTERM (= stop), read on a daemon thread."""

    def __init__(self, stdin: TextIO | None = None, install_signal: bool = True):
        self._q: queue.Queue[str] = queue.Queue()
        self._previous_handler: Any = None
        if install_signal and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, lambda *_: self._q.put("stop"))
        stream = stdin if stdin is not None else sys.stdin
        if stream is not None and not stream.closed:
            threading.Thread(target=self._read, args=(stream,), daemon=True, name="commands").start()

    def _read(self, stream: TextIO) -> None:
        try:
            for line in stream:
                command = parse_command(line)
                if command:
                    self._q.put(command)
        except (OSError, ValueError):  # stdin closed under us: no more commands
            return

    def close(self) -> None:
        """Give SIGTERM back to whoever had it (matters when a run is hosted in-process)."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def put(self, command: str) -> None:
        self._q.put(command)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out


class SilentSink:
    """The sink of ranks other than 0: one voice per run."""

    def emit(self, kind: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)
