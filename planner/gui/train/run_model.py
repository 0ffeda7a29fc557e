"""A training run as the Train page sees it: protocol events folded into chart series, progress and status.

Qt-free, so it is tested in plain Python. A live run and a replayed ``metrics.jsonl`` go through
the same :meth:`RunModel.fold`, so what the charts show after a restart is what they showed live.
Values stay in base units (bytes, seconds); the widgets convert to GiB and clock time.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.protocol import Event, ProtocolError, decode
from trainer.rundir import RESUMABLE

EMA_WEIGHT = 0.9
"""Smoothing of the loss curve (TensorBoard's slider, debiased): ~10 steps of memory."""



@dataclass
class Series:
    """One chart curve: x (step) and y, appended as events arrive."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def append(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)

    def rewind(self, x0: float) -> None:
        """Drop the points at or after ``x0`` (a resumed run redoes the steps after its checkpoint)."""
        keep = next((i for i, x in enumerate(self.x) if x >= x0), len(self.x))
        del self.x[keep:], self.y[keep:]

    def __len__(self) -> int:
        return len(self.x)


def ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Debiased exponential moving average: the first point equals the first value (no ramp from 0)."""
    out, biased = [], 0.0
    for n, value in enumerate(values, start=1):
        biased = weight * biased + (1 - weight) * value
        out.append(biased / (1 - weight**n))
    return out


@dataclass(frozen=True)
class RankMemory:
    """A multi-process run's memory, one measured curve per rank (each against the per-GPU prediction)."""

    kind: str
    """"peak_alloc": torch's peak allocated per GPU; "rss": process RSS, for CPU ranks (torch has no
    peaks there); "" for a one-process run (the chart keeps its single curves)."""
    curves: tuple[tuple[str, Series], ...] = ()
    """(legend label, series) per rank, rank order."""


@dataclass(frozen=True)
class Progress:
    step: int
    total: int | None
    """max_steps from the trainer; None until it said."""
    elapsed_s: float
    """Trainer time summed over every process of the run (a resume adds to it)."""
    eta_s: float | None

    @property
    def fraction(self) -> float | None:
        return min(self.step / self.total, 1.0) if self.total else None


def fmt_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(int(round(seconds)), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def describe_exit(code: int) -> str:
    """``exit code 3`` or, for a negative code (killed by a signal), ``exit code -9 (SIGKILL)``."""
    if code < 0:
        try:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code} (killed by signal {-code})"
    return f"exit code {code}"


class RunModel:
    """Every series, the progress and the status of one run directory's history."""

    def __init__(self, ema_weight: float = EMA_WEIGHT) -> None:
        self.ema_weight = ema_weight
        self.loss, self.loss_ema, self.eval_loss = Series(), Series(), Series()
        self.lr, self.tokens_per_s = Series(), Series()
        self.peak_alloc, self.peak_reserved, self.rss = Series(), Series(), Series()
        self.device_used = Series()
        """NVML-seen GPU memory: the step events' ``device_used_bytes`` when the trainer reports it,
        else the page's per-process sampling (see :func:`gpu_process_bytes`); empty on the CPU."""
        self._device_from_steps = False
        self.rank_alloc: list[Series] = []
        self.rank_rss: list[Series] = []
        """Per rank, from a multi-process run's ``*_rank{i}`` step fields (the unsuffixed ones are the max)."""
        self.devices: tuple[int, ...] = ()
        """NVML indices the page launched the ranks on (rank i on ``devices[i]``); () when unknown."""
        self.predicted_peak_bytes: int | None = None
        """Predicted peak allocated for the run's device (the measured peak allocated's counterpart)."""
        self.predicted_reserved_bytes: int | None = None
        self.predicted_device_bytes: int | None = None
        """Predicted reserved and device-used (nvidia-smi) peaks; on the CPU both equal allocated."""
        self.status = "idle"
        self.run_dir: str | None = None
        self.start: dict[str, Any] | None = None
        """The newest ``start`` event's fields (model, params, device...)."""
        self.end: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.checkpoints: list[tuple[int, str]] = []
        self.exit_code: int | None = None
        self.step = 0
        self.max_steps: int | None = None
        self.eta_s: float | None = None
        self.torn_lines = 0
        self.background_pid: int | None = None
        """Set by the page when an opened run's trainer.pid names a live process (status "background")."""
        self.revision = 0
        """Bumped by every change: the page redraws only when it moved since the last frame."""
        self._t = 0.0
        self._t_before = 0.0  # trainer time of earlier processes of this run (before a resume)
        self._ema_biased, self._ema_n = 0.0, 0

    # -- lifecycle -----------------------------------------------------------------------------
    def begin(self, run_dir: str) -> None:
        """A trainer process is being launched for ``run_dir`` (fresh or resumed)."""
        self.run_dir = run_dir
        self.status = "starting"
        self.end, self.error, self.exit_code = None, None, None
        self.revision += 1

    def finish(self, exit_code: int) -> None:
        """The process exited. Without an ``end`` event the run is orphaned (it crashed or was
        killed), or failed when it said so before dying."""
        self.exit_code = exit_code
        if self.end is None:
            self.status = "failed" if self.error is not None else "orphaned"
        self.eta_s = None
        self.revision += 1

    # -- folding ---------------------------------------------------------------------------------
    def fold(self, event: Event) -> None:
        f = event.fields
        if event.kind == "start":
            # a resumed process restarts its clock at 0: the run's total time keeps growing, from
            # the earlier sessions' total as the trainer recorded it (what run.json and the Runs
            # page say, even when this model saw none of them), else from what was folded here
            before = _num(f.get("runtime_before_s"))
            self._t_before = before if before is not None else self._t_before + self._t
            self._t = 0.0
            self.start = dict(f)
            self.run_dir = str(f["run_dir"])
            self.max_steps = _int(f["max_steps"])
            self.predicted_peak_bytes = _int(f["predicted_peak_bytes"])
            self.predicted_reserved_bytes = _int(f.get("predicted_reserved_bytes"))
            self.predicted_device_bytes = _int(f.get("predicted_device_bytes"))
            self.status = "running"
            self.end = self.error = None
        elif event.kind == "step":
            self._fold_step(f)
        elif event.kind == "eval":
            if (value := _num(f["eval_loss"])) is not None:
                self.eval_loss.append(float(f["step"]), value)  # type: ignore[arg-type]
        elif event.kind == "checkpoint":
            self.checkpoints.append((int(f["step"]), str(f["path"])))  # type: ignore[arg-type]
        elif event.kind == "error":
            self.error = dict(f)
            self.status = "failed"  # the end event follows; say it now, prominently
        elif event.kind == "end":
            self.end = dict(f)
            self.status = str(f["status"])
            self.step = max(self.step, int(f["steps"]))  # type: ignore[call-overload]
            self.eta_s = None
        self._t = max(self._t, event.t)
        self.revision += 1

    def _fold_step(self, f: Any) -> None:
        step = int(f["step"])
        if self.loss and step <= self.loss.x[-1]:
            # a resume redoes the steps after its checkpoint: the old tail is superseded
            for series in self._step_series():
                series.rewind(step)
            self._recompute_ema()
        self.step = step
        if (total := _int(f.get("max_steps"))) is not None and total > 0:
            self.max_steps = total
        self.eta_s = _num(f.get("eta_s"))
        self.status = "running"
        x = float(step)
        loss = _num(f["loss"])
        if loss is not None:  # a diverged (NaN) loss arrives as null: a gap, not a point
            self.loss.append(x, loss)
            self._ema_n += 1
            self._ema_biased = self.ema_weight * self._ema_biased + (1 - self.ema_weight) * loss
            self.loss_ema.append(x, self._ema_biased / (1 - self.ema_weight**self._ema_n))
        for series, key in ((self.lr, "lr"), (self.tokens_per_s, "tokens_per_s"),
                            (self.peak_alloc, "peak_alloc_bytes"), (self.peak_reserved, "peak_reserved_bytes"),
                            (self.rss, "rss_bytes")):
            if (value := _num(f.get(key))) is not None:
                series.append(x, value)
        if (used := _num(f.get("device_used_bytes"))) is not None:
            self._device_from_steps = True  # the trainer's own NVML figure: the page's sampling stops
            self.device_used.append(x, used)
        rank = 0
        while f"peak_alloc_bytes_rank{rank}" in f or f"rss_bytes_rank{rank}" in f:
            if rank == len(self.rank_alloc):
                self.rank_alloc.append(Series())
                self.rank_rss.append(Series())
            for ranks, key in ((self.rank_alloc, "peak_alloc_bytes"), (self.rank_rss, "rss_bytes")):
                if (value := _num(f.get(f"{key}_rank{rank}"))) is not None:
                    ranks[rank].append(x, value)
            rank += 1

    def _step_series(self) -> tuple[Series, ...]:
        return (self.loss, self.loss_ema, self.eval_loss, self.lr, self.tokens_per_s, self.peak_alloc,
                self.peak_reserved, self.rss, self.device_used, *self.rank_alloc, *self.rank_rss)

    def _recompute_ema(self) -> None:
        self.loss_ema = Series(list(self.loss.x), ema(self.loss.y, self.ema_weight))
        self._ema_n = len(self.loss)
        self._ema_biased = self.loss_ema.y[-1] * (1 - self.ema_weight**self._ema_n) if self.loss else 0.0

    def fold_line(self, line: str) -> bool:
        """Fold one JSON line; False (and counted) for a torn or foreign line, which is skipped."""
        try:
            event = decode(line)
        except ProtocolError:
            self.torn_lines += 1
            return False
        self.fold(event)
        return True

    def fold_device_memory(self, used_bytes: int) -> None:
        """Hook for NVML: the trainer process's GPU memory now, charted at the current step (unless
        the step events carry ``device_used_bytes``: one source per curve)."""
        if self._device_from_steps:
            return
        self.device_used.append(float(self.step), float(used_bytes))
        self.revision += 1

    # -- derived ---------------------------------------------------------------------------------
    def rank_memory(self) -> RankMemory:
        """Per-rank curves when the run has several ranks: torch's peaks on GPUs; on the CPU, where
        torch reports zeros, each process's RSS (as the single-process chart falls back to RSS)."""
        if len(self.rank_alloc) < 2:
            return RankMemory("")
        if any(any(s.y) for s in self.rank_alloc):
            gpu = [self.devices[i] if i < len(self.devices) else i for i in range(len(self.rank_alloc))]
            return RankMemory("peak_alloc", tuple((f"GPU {g} allocated", s) for g, s in zip(gpu, self.rank_alloc)))
        return RankMemory("rss", tuple((f"rank {i} RSS", s) for i, s in enumerate(self.rank_rss)))

    def progress(self) -> Progress:
        return Progress(self.step, self.max_steps, self._t_before + self._t, self.eta_s)

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE and self.run_dir is not None

    def oom_fix(self) -> dict[str, Any] | None:
        """The trainer's computed fix after an OOM: TrainConfig field changes, or None."""
        return parse_fix(self.error.get("fix")) if self.error and self.error.get("type") == "oom" else None

    def status_text(self) -> str:
        """One line for the status banner."""
        s, end, err = self.status, self.end or {}, self.error or {}
        if s == "idle":
            return "Ready: choose a model and a dataset (or Make demo model), then Start."
        if s == "starting":
            return "Starting the trainer (loading libraries, the model and the data)..."
        if s == "running":
            where = f" in the background (pid {self.background_pid})" if self.background_pid else ""
            return f"Training{where}: step {self.step} of {self.max_steps or '?'}."
        if s == "completed":
            return f"Completed: {end.get('steps')} steps in {fmt_duration(_num(end.get('runtime_s')))}."
        if s == "stopped":
            return f"Stopped at step {end.get('steps')}; a resumable checkpoint was saved."
        if s == "cancelled":
            return f"Cancelled at step {end.get('steps')} (nothing saved)."
        if s == "failed":
            code = f" ({describe_exit(self.exit_code)})" if self.exit_code is not None else ""
            return f"Failed{code}: {err.get('type', '?')} error: {err.get('message', 'no message')}"
        if s == "orphaned" and self.exit_code is not None:  # we saw its process end
            return (f"The trainer crashed ({describe_exit(self.exit_code)}) at step {self.step}; resume continues "
                    "from the last checkpoint.")
        if s == "background":
            return (f"Training in the background (pid {self.background_pid}): following its metrics.jsonl; "
                    "Stop & Save sends it SIGTERM.")
        if s == "orphaned":  # a history read from disk
            return (f"This run has no end: it was killed at step {self.step}, or is still running elsewhere. "
                    "Resume continues from its last checkpoint.")
        return s


def replay(lines: Iterable[str], model: RunModel | None = None) -> RunModel:
    """Fold a ``metrics.jsonl`` history (torn lines skipped); a history without an end is orphaned."""
    model = model or RunModel()
    for line in lines:
        if line.strip():
            model.fold_line(line)
    if model.end is None and model.start is not None:
        model.status = "orphaned"
    model.eta_s = None
    return model


def parse_fix(fix: Any) -> dict[str, Any] | None:
    """The OOM event's ``fix`` (a JSON string of TrainConfig changes) as a dict; None if absent or bad."""
    if not isinstance(fix, str) or not fix:
        return None
    try:
        changes = json.loads(fix)
    except ValueError:
        return None
    return changes if isinstance(changes, dict) and changes else None


def gpu_process_bytes(gpus: Iterable[Any], pids: set[int]) -> int | None:
    """GPU memory NVML charges to ``pids`` on the fullest GPU (``planner.hardware.sample().gpus``):
    the figure to hold against a per-GPU prediction. None when they hold none or the driver does
    not say (WDDM, WSL, no permission)."""
    per_gpu = []
    for g in gpus:
        used = [p.used_memory for p in (g.processes or ()) if p.pid in pids and p.used_memory is not None]
        if used:
            per_gpu.append(sum(used))
    return max(per_gpu) if per_gpu else None


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants: a multi-GPU trainer's ranks are torchrun's children."""
    import psutil

    try:
        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    except psutil.Error:  # gone, or not ours to inspect
        return {pid}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def nvml_sampler() -> Callable[[int], int | None] | None:
    """The per-process GPU memory reader for the memory chart, or None without a GPU."""
    from planner import hardware

    if not hardware.sample().gpus:
        return None
    return lambda pid: gpu_process_bytes(hardware.sample().gpus, process_tree(pid))
