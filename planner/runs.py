"""Run directories as the Runs page sees them: what happened, from the files a run leaves behind.

Qt-free (stdlib, psutil and the trainer's contract modules ``trainer.protocol`` and
``trainer.rundir``, where the run directory's names, lock and PID record live) so the status
logic is tested without a display. Only directories the trainer made are runs: a model folder
dropped into the runs root is neither listed nor deletable here. Listing must stay fast with
hundreds of runs and 100 MB histories: a summary reads
``run.json`` and ``config.json`` (small) and only the head and tail of ``metrics.jsonl``; the full
history is read only for the one run being replayed (:func:`load_events`, :class:`EventReader`).

Status, most trustworthy evidence first:

1. A trainer holds the directory's lock, or ``trainer.pid`` names a live process started at the
   recorded time -> running (a resumed run is running even though the previous session's
   ``run.json`` is still there; a PID the OS gave to another process since is not the trainer).
2. The history goes on after its last ``end`` event (or has none), and ``trainer.pid`` is stale
   or the run has events -> orphaned: the trainer was killed before it could say goodbye.
3. ``run.json`` (written at the end of every clean finish), else the last ``end`` event.
4. Anything else, including garbage -> unknown. Nothing here raises on a malformed directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.protocol import END_STATUSES, Event, ProtocolError, decode
from trainer.rundir import (
    CONFIG,
    METRICS,
    PID_FILE,
    RESUMABLE,
    SUMMARY,
    TAIL_BYTES,
    RunDirBusy,
    RunLock,
    history_tail,
    is_run_dir,
    latest_checkpoint,
    locked,
    read_json,
    read_pid_record,
    remove_run,
    trainer_alive,
)

DEFAULT_RUNS_ROOT = Path.home() / "finetune-runs"
"""Where the app creates run directories unless the user chose another folder."""


class RunError(ValueError):
    """A run directory operation the user asked for cannot be done (e.g. deleting a running run)."""


@dataclass(frozen=True)
class RunSummary:
    """One run directory, summarised for a table row. Bytes and seconds; None where unknown."""

    path: Path
    name: str
    status: str
    """One of :data:`trainer.rundir.STATUSES`."""
    model: str | None = None
    method: str | None = None
    steps: int | None = None
    max_steps: int | None = None
    final_loss: float | None = None
    peak_measured_bytes: int | None = None
    peak_kind: str | None = None
    """cuda_max_allocated | host_rss: which number ``peak_measured_bytes`` is."""
    predicted_peak_bytes: int | None = None
    """The planner's predicted peak allocated bytes for this run's device."""
    peak_alloc_bytes: int | None = None
    """Measured peak allocated: torch.cuda.max_memory_allocated on a GPU, the live tensor bytes of
    the trainer's tensor meter on the CPU; the same kind as ``predicted_peak_bytes`` on both."""
    peak_alloc_phase: str | None = None
    """forward | backward | optimizer step: when the measured peak happened (the CPU meter says)."""
    peak_shape: tuple[int, int] | None = None
    """(rows, padded length) of the micro-batch in flight at the measured peak (run.json)."""
    predicted_at_peak_bytes: int | None = None
    """The prediction for that micro-batch's shape: what the measured peak is compared with
    (batches padded to their longest sample are shorter than max_seq_len)."""
    device: str | None = None
    """cuda | cpu, from the start event (else from ``peak_kind``)."""
    gpu: str | None = None
    """The GPU's name as CUDA gives it (start event; None on the CPU)."""
    precision: str | None = None
    """The precision the trainer resolved (config.json may say "auto"), from the start event."""
    runtime_s: float | None = None
    started: float = 0.0
    """Epoch seconds: config.json's mtime (written at launch), else estimated from the history."""
    pid: int | None = None
    """The trainer's PID: live when running, the dead one when orphaned, else None."""
    resumable: bool = False
    checkpoint: Path | None = None
    """The newest complete checkpoint, where a resume continues from."""
    error: str | None = None

    @property
    def compared_bytes(self) -> int | None:
        """The prediction the measured peak is compared with: at the peak's batch shape when the
        run recorded it, else the plan's (at max_seq_len)."""
        return self.predicted_at_peak_bytes or self.predicted_peak_bytes

    @property
    def ratio(self) -> float | None:
        """Measured peak allocated / predicted peak allocated (the same kind on a GPU and on the CPU;
        never the host RSS; :attr:`compared_bytes`): > 1 means the estimate was optimistic. None
        when either is missing."""
        if self.peak_alloc_bytes and self.compared_bytes:
            return self.peak_alloc_bytes / self.compared_bytes
        return None


def scan_runs(root: Path | str) -> list[RunSummary]:
    """Every run directory directly under ``root``, newest first; [] when root does not exist."""
    return RunScanner().scan(root)


def read_run(path: Path | str) -> RunSummary:
    """Summarise one run directory; status "unknown" rather than an exception for a broken one."""
    path = Path(path)
    try:
        return _read(path)
    except Exception as exc:  # noqa: BLE001 - a listing must survive any one bad directory
        return RunSummary(path, path.name, "unknown", started=_mtime(path), error=f"unreadable: {exc}")


def load_events(path: Path | str) -> list[Event]:
    """Every decodable event of a run's history (torn and junk lines skipped)."""
    return EventReader(Path(path)).read_new(final=True)


def delete_run(path: Path | str) -> list[Path]:
    """Remove what the trainer wrote in a run directory, and the folder once nothing else is left;
    returns the user's own files that were kept. Refuses a running run (its lock is held while
    deleting, so no trainer can start in it meanwhile) and anything that is not a run of ours."""
    path = Path(path)
    if not path.is_dir() or not is_run_dir(path):
        raise RunError(f"{path} is not a run directory of this trainer; not deleting it")
    summary = read_run(path)
    if summary.status == "running":
        raise RunError(f"{path.name} is still training (PID {summary.pid}); stop it before deleting")
    try:
        with RunLock(path).acquire(wait_s=0.0):
            return remove_run(path)
    except RunDirBusy:
        raise RunError(f"{path.name} is still training; stop it before deleting") from None
    except OSError as exc:
        raise RunError(f"could not delete {path.name}: {exc.strerror or exc}") from None


class EventReader:
    """Reads a run's history incrementally: each call returns only the complete lines added since.

    A half-written last line stays unread until its newline arrives, so a live run never yields a
    torn event; a file that shrank (replaced) is read again from the start.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS
        self.offset = 0

    def read_new(self, final: bool = False) -> list[Event]:
        """``final``: the history is over, so an unterminated last line counts (if it decodes)."""
        events: list[Event] = []
        try:
            with open(self.path, "rb") as fh:
                if fh.seek(0, os.SEEK_END) < self.offset:
                    self.offset = 0
                fh.seek(self.offset)
                for raw in fh:  # streamed: a 100 MB history is never held twice
                    if not raw.endswith(b"\n") and not final:
                        break
                    self.offset += len(raw)
                    events.extend(_decode_lines([raw]))
        except OSError:
            pass
        return events


@dataclass
class RunScanner:
    """:func:`scan_runs` with a cache: a directory is re-read only when its files changed.

    The Runs page calls this every couple of seconds; with hundreds of runs that costs one stat per
    file. Running runs are always re-read: a SIGKILLed trainer changes no file at all.
    """

    _cache: dict[Path, tuple[tuple[Any, ...], RunSummary]] = field(default_factory=dict)

    def scan(self, root: Path | str, force: frozenset[Path] = frozenset()) -> list[RunSummary]:
        try:
            dirs = [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        except OSError:
            dirs = []
        found: dict[Path, tuple[tuple[Any, ...], RunSummary]] = {}
        for path in dirs:
            if not is_run_dir(path):
                continue
            signature = _signature(path)
            cached = self._cache.get(path)
            if cached and cached[0] == signature and cached[1].status != "running" and path not in force:
                found[path] = cached
            else:
                found[path] = (signature, read_run(path))
        self._cache = found
        return sorted((s for _, s in found.values()), key=lambda s: (s.started, s.name), reverse=True)


# -- reading one directory ---------------------------------------------------------------------
def _read(path: Path) -> RunSummary:
    summary = read_json(path / SUMMARY)
    config = read_json(path / CONFIG)
    head, tail = _head_and_tail(path / METRICS)
    start = head[0] if head and head[0].kind == "start" else None
    last_step = next((e for e in reversed(tail) if e.kind == "step"), None)
    last_end = max((i for i, e in enumerate(tail) if e.kind == "end"), default=None)
    ended = last_end is not None and last_end == len(tail) - 1
    record = read_pid_record(path)
    pid, pid_file = (record.pid if record else None), (path / PID_FILE).exists()
    alive = locked(path) or (record is not None and trainer_alive(record))

    if alive:
        status = "running"
    elif (pid_file or head or tail) and not ended:
        status = "orphaned"
    elif summary.get("status") in END_STATUSES:
        status = str(summary["status"])
    elif ended:
        status = str(tail[-1]["status"])
    else:
        status = "unknown"

    errors = [e for e in tail if e.kind == "error"]
    error = _str(summary.get("error")) if status in END_STATUSES else None
    if error is None and errors and status in ("failed", "orphaned"):
        error = f"{errors[-1]['type']}: {errors[-1]['message']}"
    oom = status == "failed" and (error or "").startswith("oom")
    checkpoint = latest_checkpoint(path)
    use_summary = status in END_STATUSES and bool(summary)

    def pick(key: str, *fallbacks: Any) -> Any:
        if use_summary and summary.get(key) is not None:
            return summary[key]
        return next((v for v in fallbacks if v is not None), None)

    measured_from_steps, kind_from_steps = _peak_from_steps(last_step, _get(start, "device"))
    last_t = (tail or head)[-1].t if (tail or head) else None
    peak_kind = _str(pick("peak_kind", kind_from_steps))
    device = _str(_get(start, "device")) or {"cuda_max_allocated": "cuda", "host_rss": "cpu"}.get(peak_kind or "")
    return RunSummary(
        path=path,
        name=path.name,
        status=status,
        model=_str(pick("model", _get(start, "model"), config.get("model"))),
        method=_str(pick("method", _get(start, "method"), config.get("method"))),
        steps=_int(pick("steps", _get(tail[-1] if ended else None, "steps"), _get(last_step, "step"))),
        max_steps=_int(_get(last_step, "max_steps") or _get(start, "max_steps")),
        final_loss=_float(pick("final_loss", _get(last_step, "loss"))),
        peak_measured_bytes=_int(pick("peak_measured_bytes", measured_from_steps)),
        peak_kind=peak_kind,
        predicted_peak_bytes=_int(pick("predicted_peak_bytes", _get(start, "predicted_peak_bytes")))
        if _comparable_prediction(start, device) else None,
        # a running or killed run has no run.json: its last step's peak is cumulative (0 = not yet)
        peak_alloc_bytes=_int(pick("peak_alloc_bytes", _get(last_step, "peak_alloc_bytes") or None)),
        peak_alloc_phase=_str(pick("peak_alloc_phase")),
        peak_shape=_shape(pick("peak_batch_size"), pick("peak_seq_len")),
        predicted_at_peak_bytes=_int(pick("predicted_at_peak_bytes")),
        device=device,
        gpu=_str(_get(start, "gpu")),
        precision=_str(_get(start, "precision")),
        runtime_s=_runtime(pick("runtime_s", _get(tail[-1] if ended else None, "runtime_s")), last_step, last_t),
        started=_started(path, last_t),
        pid=pid if status in ("running", "orphaned") else None,
        resumable=checkpoint is not None and (status in RESUMABLE or oom),
        checkpoint=checkpoint,
        error=error,
    )


def _head_and_tail(metrics: Path) -> tuple[list[Event], list[Event]]:
    """The first event, and the last events from the last ``step`` on (or all of the last 64 KiB).

    Only a handful of lines are decoded however long the history: listing 200 runs stays fast.
    """
    try:
        with open(metrics, "rb") as fh:
            first = fh.readline(TAIL_BYTES)
    except OSError:
        return [], []
    tail: list[Event] = []
    for raw in reversed(history_tail(metrics)):
        tail[:0] = _decode_lines([raw])
        if tail and tail[0].kind == "step":
            break
    return _decode_lines([first]), tail


def _decode_lines(lines: list[bytes]) -> list[Event]:
    events = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            events.append(decode(raw.decode("utf-8", errors="replace")))
        except ProtocolError:
            continue  # a torn last line of a killed run, or junk: the rest of the history stands
    return events


def _peak_from_steps(last_step: Event | None, device: Any) -> tuple[int | None, str | None]:
    """Without run.json: the CUDA peak when a GPU run reported one (it is cumulative), else RSS (a
    CPU run's steps carry its tensor peak too, which the GPU prediction does not describe)."""
    alloc, rss = _int(_get(last_step, "peak_alloc_bytes")), _int(_get(last_step, "rss_bytes"))
    if alloc and device != "cpu":
        return alloc, "cuda_max_allocated"
    return (rss, "host_rss") if rss else (None, None)


def _runtime(recorded: Any, last_step: Event | None, last_t: float | None) -> float | None:
    """The run's total seconds, every session included: run.json or the end event when it ended;
    while it trains, or after a kill, the total its last step recorded plus the time since (the
    trainer's event clock restarts at each resume, so ``t`` alone is only the last session's)."""
    if (total := _float(recorded)) is not None:
        return total
    step_total = _float(_get(last_step, "runtime_s"))
    if step_total is not None and last_step is not None and last_t is not None:
        return step_total + max(last_t - last_step.t, 0.0)
    return last_t  # a history from before the trainer recorded totals: its last session's time


def _signature(path: Path) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in (METRICS, SUMMARY, PID_FILE, CONFIG, "checkpoints"):
        try:
            st = os.stat(path / name)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _started(path: Path, last_t: float | None) -> float:
    config_mtime = _mtime(path / CONFIG)
    if config_mtime:
        return config_mtime
    metrics_mtime = _mtime(path / METRICS)
    if metrics_mtime:
        return metrics_mtime - (last_t or 0.0)
    return _mtime(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _comparable_prediction(start: Event | None, device: str | None) -> bool:
    """False for a CPU run recorded before the trainer predicted CPU runs as such: its start event
    (without ``predicted_reserved_bytes``) holds a GPU's prediction, not its tensors'."""
    return device != "cpu" or start is None or "predicted_reserved_bytes" in start.fields


def _shape(rows: Any, length: Any) -> tuple[int, int] | None:
    rows, length = _int(rows), _int(length)
    return (rows, length) if rows and length else None


def _get(event: Event | None, key: str) -> Any:
    return None if event is None else event.get(key)


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _float(v: Any) -> float | None:
    """A finite number from JSON, else None (bools, strings, NaN: a hand-edited file is no crash)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _int(v: Any) -> int | None:
    f = _float(v)
    return None if f is None else int(f)
