"""The run directory: what the trainer writes there, how it claims and locks one, and how a
finished checkpoint is told from one a kill interrupted.

A contract module (DESIGN.md, "Layering rules"): the standard library, ``planner.atomic`` and
``trainer.protocol`` only (psutil lazily), because the planner's Runs and Train pages read run
directories through it. One implementation of each fact for both sides.

Ownership: a run directory is one the trainer created or claimed, and says so with
:data:`MARKER`. The trainer trains only in a new folder, an empty one, or one of its own; it
deletes only the names in :data:`WRITTEN`, never a file it did not write.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.atomic import atomic_write_text
from trainer.protocol import END_STATUSES, ProtocolError, decode

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "run.json"
PID_FILE = "trainer.pid"
"""Present while a trainer process works in the run directory: its PID and start time."""
MARKER = ".finetune-run.json"
"""Written when the trainer claims a directory: what the checkpoints depend on (see
``TrainConfig.basis``) and the training length the run was last asked for."""
LOCK = ".trainer.lock"
"""Locked (flock) by the one process that trains in the directory; never deleted while in use."""
COMMANDS_FILE = "commands"
"""Commands the multi-process launcher relays to its workers."""
PEER_ERROR = ".rank{}.error.json"
COMPLETE_MARKER = ".complete"
"""Written into a checkpoint once every rank finished every file of it."""
DEBUG_LOG = "debug.log"
"""Third-party warnings, logging and progress bars of every session (trainer/quiet.py)."""
WRITTEN = (CONFIG, METRICS, SUMMARY, PID_FILE, COMMANDS_FILE, DEBUG_LOG, "checkpoints", "adapter", "model", MARKER,
           LOCK)
"""Every name the trainer writes directly in a run directory; deleting a run removes these only."""
_COMPLETE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")

STATUSES = END_STATUSES + ("running", "orphaned", "unknown")
"""A run's status, the one vocabulary of the app: how it ended (completed, stopped, cancelled,
failed: its ``end`` event), ``running`` (a trainer holds its lock), ``orphaned`` (its history
stops without an end: the trainer was killed or crashed) or ``unknown`` (unreadable)."""
RESUMABLE = ("stopped", "orphaned")
"""Statuses a complete checkpoint continues from (and a failed run whose failure was an OOM)."""


class RunDirError(ValueError):
    """The run directory cannot be used as asked: one line saying why and what to do."""

    hint = "choose a new or empty output_dir, or resume the run that is there"


class RunDirBusy(RunDirError):
    """Another trainer process holds the directory's lock."""

    hint = "wait for the other trainer to end, or stop it"


# -- what is there ------------------------------------------------------------------------------
def state(run_dir: Path) -> str:
    """``missing``, ``empty``, ``ours`` (our marker, or a run of an earlier version: a history in
    our protocol), ``file`` (not a directory) or ``foreign`` (anything else)."""
    try:
        if not run_dir.exists():
            return "missing"
        if not run_dir.is_dir():
            return "file"
        if claimed(run_dir) or _protocol_history(run_dir / METRICS):
            return "ours"
        # a lock alone is left by a trainer that died before it claimed the folder
        return "foreign" if any(p.name != LOCK for p in run_dir.iterdir()) else "empty"
    except OSError:
        return "foreign"  # unreadable: never ours to write into


def is_run_dir(path: Path) -> bool:
    return state(path) == "ours"


def _protocol_history(metrics: Path) -> bool:
    try:
        with open(metrics, "rb") as fh:
            first = fh.readline(65536).decode("utf-8", errors="replace")
        decode(first)
    except (OSError, ProtocolError):
        return False
    return True


def has_trained(run_dir: Path) -> bool:
    """Whether the run completed at least one step (a step event, a checkpoint or a final save):
    a run that failed before that holds nothing worth keeping, and a new run may take its place."""
    if latest_checkpoint(run_dir) or (run_dir / "adapter").is_dir() or (run_dir / "model").is_dir():
        return True
    try:
        with open(run_dir / METRICS, "rb") as fh:
            return any(b'"event":"step"' in line for line in fh)
    except OSError:
        return False


def check_new(run_dir: Path) -> str | None:
    """Why ``run_dir`` cannot take a new run (a one-line message), or None when it can: it does
    not exist, is empty, or is a run of ours that never completed a step."""
    kind = state(run_dir)
    if kind == "file":
        return f"output_dir {run_dir} is a file; give a folder for the run"
    if kind == "foreign":
        return (f"output_dir {run_dir} already holds files that are not a run of this trainer; "
                "choose a new or empty folder")
    if kind == "ours" and has_trained(run_dir):
        return (f"output_dir {run_dir} already holds a run; resume it (Runs page, or --resume {run_dir}) "
                "or choose another output_dir")
    return None


TAIL_BYTES = 64 * 1024
"""How much of the end of ``metrics.jsonl`` a reader needs: the last step, error and end events
(and the run's latest total time). A 100 MB history is never read whole to summarise it."""


def history_tail(metrics: Path) -> list[bytes]:
    """The lines in the last :data:`TAIL_BYTES` of a history, the cut-off first one dropped
    ([] when it cannot be read). A torn last line is the caller's to skip."""
    try:
        with open(metrics, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL_BYTES))
            lines = fh.read().split(b"\n")
    except OSError:
        return []
    return lines[1:] if size > TAIL_BYTES else lines


def claimed(run_dir: Path) -> bool:
    """The trainer's marker is there: the directory was not deleted or moved under the run."""
    return (run_dir / MARKER).is_file()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file the trainer wrote; {} when missing, unreadable or hand-edited into junk."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def read_marker(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / MARKER)


def write_marker(run_dir: Path, **fields: Any) -> None:
    atomic_write_text(run_dir / MARKER, json.dumps({"kind": "finetune-planner run", "version": 1, **fields},
                                                   indent=2) + "\n")


# -- who is training it -------------------------------------------------------------------------
class RunLock:
    """An exclusive advisory lock on the run directory, held for the trainer's whole life.

    ``flock`` is released by the kernel when its holder dies, SIGKILL included, so a crashed
    run never leaves a stale lock behind. A caller that only probes (the app) holds it for
    microseconds; a trainer that finds it taken retries for ``wait_s`` before giving up.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None

    def acquire(self, wait_s: float = 2.0) -> RunLock:
        try:
            fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunDirError(f"output_dir {self.run_dir}: cannot write there ({exc.strerror})") from None
        deadline = time.monotonic() + wait_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                record = read_pid_record(self.run_dir)
                who = f" (PID {record.pid})" if record else ""
                raise RunDirBusy(f"{self.run_dir} is in use by another trainer{who}; wait for it to end or stop it")
            time.sleep(0.05)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # the C runtime's byte-range lock on the file's first byte
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            return True  # a filesystem without locks (some NFS mounts): train unguarded rather than never
        raise
    return True


def locked(run_dir: Path) -> bool:
    """Whether a trainer holds the directory's lock now (a probe: takes and drops it at once)."""
    if not (run_dir / LOCK).is_file():
        return False
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PidRecord:
    pid: int
    started: float | None
    """The process's start time (epoch seconds, psutil's ``create_time``): a PID the OS later gave
    to another process does not match it. None in files written by earlier versions."""


def write_pid(run_dir: Path) -> None:
    started = _create_time(os.getpid())
    atomic_write_text(run_dir / PID_FILE, f"{os.getpid()} {started!r}\n" if started else f"{os.getpid()}\n")


def read_pid_record(run_dir: Path) -> PidRecord | None:
    try:
        parts = (run_dir / PID_FILE).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None
    if not parts or not parts[0].isdigit():
        return None
    try:
        started = float(parts[1]) if len(parts) > 1 else None
    except ValueError:
        started = None
    return PidRecord(int(parts[0]), started)


def trainer_alive(record: PidRecord) -> bool:
    """The recorded process is alive and is the one that wrote the record: same start time (or,
    for a record without one, a command line naming the trainer), not a zombie."""
    import psutil

    try:
        if record.pid <= 0 or not psutil.pid_exists(record.pid):
            return False
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if record.started is not None:
            return abs(proc.create_time() - record.started) < 0.5
        return "trainer" in " ".join(proc.cmdline())
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return False
    except psutil.AccessDenied:
        return True  # someone else's live process: assume the worst, so it is never signalled or deleted
    except (psutil.Error, OSError, ValueError):
        return False


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no psutil or no /proc: a record without a start time
        return None


# -- removing what the run wrote ----------------------------------------------------------------
def written_by_run(run_dir: Path) -> list[Path]:
    """The entries of ``run_dir`` the trainer wrote: :data:`WRITTEN`, peer error files, and the
    temporary siblings an interrupted atomic write leaves (``.NAME.*.tmp``)."""
    out = []
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return []
    for p in entries:
        name = p.name
        ours = name in WRITTEN or (name.startswith(".rank") and name.endswith(".error.json"))
        ours = ours or any(name.startswith(f".{w}.") and name.endswith((".tmp", ".old")) for w in WRITTEN)
        if ours:
            out.append(p)
    return out


def remove_written(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete what the run wrote (but the names in ``keep``); a symlink goes, never its target."""
    for p in written_by_run(run_dir):
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def remove_run(run_dir: Path) -> list[Path]:
    """Delete what the run wrote, and the folder if nothing else is left; returns what was kept
    (files the user put there). Call with the directory's lock held or known free."""
    remove_written(run_dir)
    kept = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    if not kept:
        run_dir.rmdir()
    return kept


# -- checkpoints --------------------------------------------------------------------------------
def mark_complete(checkpoint: Path) -> None:
    """Written after transformers finished every file of the checkpoint: resume trusts only these."""
    if checkpoint.is_dir():
        atomic_write_text(checkpoint / COMPLETE_MARKER, "ok\n")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose every file was written (marker, or all files and valid state)."""

    def complete(p: Path) -> bool:
        if (p / COMPLETE_MARKER).is_file():
            return True
        if not all((p / f).is_file() for f in _COMPLETE_FILES):
            return False
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return False
        return True

    found = []
    try:
        candidates = list((run_dir / "checkpoints").glob("checkpoint-*"))
    except OSError:
        return None
    for p in candidates:
        step = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and step.isdigit() and complete(p):
            found.append((int(step), p))
    return max(found)[1] if found else None


TRAINING_STATE = ("trainer_state", "optimizer", "scheduler", "rng_state")
"""A checkpoint's files that only resume training: never part of an exported model."""


def trained_folder(run_dir: Path, full: bool) -> Path | None:
    """The run's final adapter (``model/`` for a full fine-tune), else its newest complete
    checkpoint; None when it has neither."""
    final = run_dir / ("model" if full else "adapter")
    return final if final.is_dir() else latest_checkpoint(run_dir)


def merge_refusal(peft: str) -> str | None:
    """Why a run's adapter cannot be merged into its base, or None: prompt and prefix tuning add
    trained token positions and change no weight (peft has no ``merge_and_unload`` for them)."""
    return f"{peft} tuning adds virtual tokens: nothing to merge into the weights" if peft in ("prompt", "prefix") \
        else None
