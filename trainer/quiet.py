"""Third-party noise to the run's debug log; our own lines to the user.

The app's Log pane shows the trainer's stderr, and the libraries write there freely:
bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels", transformers'
FutureWarnings with their source lines, tqdm's progress bars. While a session trains, Python's
``sys.stderr`` is ``<run_dir>/debug.log`` (appended, a header per session). That one switch
catches every route the noise takes, because each looks ``sys.stderr`` up when it writes:
``warnings`` (and so torch's C++ warnings, which surface as Python warnings), tqdm's default
file, logging's last-resort handler (bitsandbytes, peft, accelerate log through it). Stream
handlers a library bound to the real stderr before the session (transformers' and datasets'
own) are pointed at the log too, and back afterwards.

Our own lines never go there alone: :func:`say` writes ``error:``, ``note:`` and ``warning:``
lines and the traceback of a bug to the real stderr (and a copy to the log, so it reads in order).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from trainer.rundir import DEBUG_LOG

_voice: TextIO | None = None
"""The real stderr while a session is quiet; None otherwise (then stderr is the voice)."""


def say(text: str) -> None:
    """A human line for the user, on the real stderr. A run the app left in the background has no
    reader, and that must not turn a reported error into a BrokenPipeError."""
    streams = [_voice, sys.stderr] if _voice is not None else [sys.stderr]
    for stream in streams:
        try:
            print(text, file=stream, flush=True)
        except (BrokenPipeError, ValueError, OSError):
            pass


class _LogStream(io.TextIOBase):
    """The debug log as ``sys.stderr``: a full disk or a closed file drops noise, never the run."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def write(self, text: str) -> int:
        try:
            self._file.write(text)
        except (OSError, ValueError):
            pass
        return len(text)

    def flush(self) -> None:
        try:
            self._file.flush()
        except (OSError, ValueError):
            pass

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # faulthandler and the like want a descriptor: the log's
        return self._file.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._file.encoding


@contextlib.contextmanager
def quiet(run_dir: Path) -> Iterator[None]:
    """Within: third-party stderr output goes to ``run_dir/debug.log``; :func:`say` reaches the user."""
    global _voice
    try:
        file = open(run_dir / DEBUG_LOG, "a", encoding="utf-8", buffering=1)
    except OSError:
        yield  # no log to write to: the noise stays in view rather than vanishing
        return
    log, real, voice_before = _LogStream(file), sys.stderr, _voice
    log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} session of pid {os.getpid()}"
              f" (rank {os.environ.get('RANK', '0')}) ---\n")
    _repoint(real, log)
    sys.stderr, _voice = log, real
    try:
        yield
    finally:
        sys.stderr, _voice = real, voice_before
        _repoint(log, real)  # also the handlers a library made during the session (bound to the log)
        file.close()


def _repoint(old: object, new: TextIO) -> None:
    """Every logging stream handler writing to ``old`` writes to ``new`` from now on."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                with contextlib.suppress(AttributeError):  # logging's last resort: follows sys.stderr itself
                    handler.setStream(new)
