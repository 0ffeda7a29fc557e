"""The trainer's voice and ears: events out (stdout + metrics.jsonl), commands in (stdin, SIGTERM).

``EventCallback`` is a transformers ``TrainerCallback``: the training loop stays transformers'
own; the callback only reports and flips ``TrainerControl`` flags when a command arrives.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from transformers import TrainerCallback

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
            self._file.write(line + "\n")
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
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil missing: report 0 rather than fail a training step
        return 0


class EventCallback(TrainerCallback):
    """Turns Trainer logs into protocol events and commands into control flags."""

    def __init__(self, sink: EventSink, commands: Commands, device: str):
        self.sink = sink
        self.commands = commands
        self.device = device
        self.outcome = "completed"
        """completed | stopped | cancelled: how the loop ended, decided by commands."""
        self._last_tokens = 0
        self._last_time = time.monotonic()
        self._train_start = time.monotonic()

    # -- commands ---------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        from trainer.distributed import agree

        for command in agree(self.commands.drain()):
            if command == "checkpoint":
                control.should_save = True
            elif command == "stop" and self.outcome == "completed":
                self.outcome = "stopped"
                control.should_save = True
                control.should_training_stop = True
            elif command == "cancel":
                self.outcome = "cancelled"
                control.should_save = False
                control.should_training_stop = True
        return control

    # -- events -----------------------------------------------------------------------------
    def _memory(self) -> tuple[int, int]:
        if self.device != "cuda":
            return 0, 0
        import torch

        return int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        now = time.monotonic()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        dt = max(now - self._last_time, 1e-9)
        tokens_per_s = (tokens - self._last_tokens) / dt
        self._last_tokens, self._last_time = tokens, now
        elapsed = now - self._train_start
        done = max(state.global_step, 1)
        eta = elapsed / done * max(state.max_steps - state.global_step, 0) if state.max_steps else None
        from trainer.distributed import gather

        ranks = gather((*self._memory(), rss_bytes()))
        # each rank's figures as flat fields; the unsuffixed ones are the largest, the GPU to watch
        per_rank = {f"{name}_rank{i}": value for i, figures in enumerate(ranks) if len(ranks) > 1
                    for name, value in zip(("peak_alloc_bytes", "peak_reserved_bytes", "rss_bytes"), figures)}
        alloc, reserved, rss = (max(column) for column in zip(*ranks))
        self.sink.emit(
            "step", step=state.global_step, epoch=float(state.epoch or 0.0), loss=float(logs["loss"]),
            lr=float(logs.get("learning_rate", 0.0)), grad_norm=_float(logs.get("grad_norm")),
            tokens_per_s=round(tokens_per_s, 2), peak_alloc_bytes=alloc, peak_reserved_bytes=reserved,
            rss_bytes=rss, max_steps=state.max_steps, eta_s=None if eta is None else round(eta, 1),
            **per_rank)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.sink.emit("eval", step=state.global_step, eval_loss=float(metrics["eval_loss"]))

    def on_save(self, args, state, control, **kwargs):
        from trainer.distributed import barrier, rank

        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        barrier()  # every rank's files (its RNG state, its shards) are written before the marker
        if rank() == 0:
            mark_complete(path)
        self.sink.emit("checkpoint", step=state.global_step, path=str(path))


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


COMPLETE_MARKER = ".complete"


def mark_complete(checkpoint: Path) -> None:
    """Written after transformers finished every file of the checkpoint: resume trusts only these."""
    from trainer.files import atomic_write_text

    if checkpoint.is_dir():
        atomic_write_text(checkpoint / COMPLETE_MARKER, "ok\n")
