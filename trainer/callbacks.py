"""The transformers side of events and commands (trainer/events.py holds the I/O).

``EventCallback`` is a transformers ``TrainerCallback``: the training loop stays transformers'
own; the callback only reports and flips ``TrainerControl`` flags when a command arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer.clock import Pace
from trainer.events import Commands, EventSink, rss_bytes
from trainer.faults import ensure_present
from trainer.rundir import mark_complete


class EventCallback(TrainerCallback):
    """Turns Trainer logs into protocol events and commands into control flags."""

    def __init__(self, sink: EventSink, commands: Commands, device: str, watch: Path | None = None,
                 total_s: Callable[[], float] | None = None):
        """``watch``: the run directory, checked at every step (one stat) so a run whose folder was
        deleted ends at once as an ``io`` error instead of training on into the void.
        ``total_s``: the run's seconds so far, every session included (each step event carries it);
        by default the time since this callback was made."""
        self.watch = watch
        created = time.monotonic()
        self.total_s = total_s or (lambda: time.monotonic() - created)
        self.sink = sink
        self.commands = commands
        self.device = device
        self.outcome = "completed"
        """completed | stopped | cancelled: how the loop ended, decided by commands."""
        self._last_tokens = 0
        self._last_time = time.monotonic()
        self.pace = Pace()
        self.meter: Any = None
        """The run's phase tracker (trainer/tensor_memory.py): its running peaks are the step
        events' (on CUDA too: it resets torch's peak counters at every phase boundary)."""
        self.device_used: Callable[[], int | None] | None = None
        """NVML's used bytes of the run's GPU (trainer/measure.py DeviceMemory); None: no NVML."""

    def on_train_begin(self, args, state, control, **kwargs):
        # the starting line: loading, and a resume's checkpoint, are not training steps
        self._last_time = time.monotonic()
        self._last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.pace.mark(state.global_step, self._last_time)

    # -- commands ---------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        from trainer.distributed import agree

        if self.watch is not None:
            ensure_present(self.watch)
        if state.max_steps and state.global_step >= state.max_steps:
            # the last step is always a checkpoint (save_steps 0 included): raising max_steps or
            # epochs and resuming then continues the finished run instead of starting it over
            control.should_save = True
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
    def _memory(self) -> tuple[int, int, int | None]:
        """(peak allocated, peak reserved, device used or None) so far."""
        used = self.device_used() if self.device_used is not None else None
        if self.meter is None:  # not attached (yet): nothing measured
            return 0, 0, used
        return self.meter.peak_bytes(), self.meter.reserved_bytes(), used

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        now = time.monotonic()
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        dt = max(now - self._last_time, 1e-9)
        tokens_per_s = (tokens - self._last_tokens) / dt
        self._last_tokens, self._last_time = tokens, now
        self.pace.mark(state.global_step, now)
        eta = self.pace.eta(state.max_steps - state.global_step) if state.max_steps else None
        from trainer.distributed import gather

        alloc, reserved, used = self._memory()
        ranks = gather((alloc, reserved, rss_bytes(), used))
        # each rank's figures as flat fields; the unsuffixed ones are the largest, the GPU to watch
        more = {f"{name}_rank{i}": value for i, figures in enumerate(ranks) if len(ranks) > 1
                for name, value in zip(("peak_alloc_bytes", "peak_reserved_bytes", "rss_bytes"), figures)}
        alloc, reserved, rss = (max(column) for column in list(zip(*ranks))[:3])
        if self.device == "cuda":  # NVML's view of a GPU (every process on it); None: no NVML
            gpus = [figures[3] for figures in ranks if figures[3] is not None]
            more["device_used_bytes"] = max(gpus) if gpus else None
        self.sink.emit(
            "step", step=state.global_step, epoch=float(state.epoch or 0.0), loss=float(logs["loss"]),
            lr=float(logs.get("learning_rate", 0.0)), grad_norm=_float(logs.get("grad_norm")),
            tokens_per_s=round(tokens_per_s, 2), peak_alloc_bytes=alloc, peak_reserved_bytes=reserved,
            rss_bytes=rss, max_steps=state.max_steps, eta_s=None if eta is None else round(eta, 1),
            runtime_s=round(self.total_s(), 2), **more)

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


class RankBudget(TrainerCallback):
    """AdaLoRA's rank allocation, which no Trainer runs by itself: after each optimizer step, with
    the gradients still there (before ``zero_grad``), score every adapter rank and mask the least
    important ones down to the step's budget (peft ``AdaLoraModel.update_and_allocate``)."""

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        model = getattr(model, "module", model)  # DDP's wrapper
        model.base_model.update_and_allocate(state.global_step)
