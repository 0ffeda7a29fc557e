"""Live tensor memory of a CPU run: the counterpart of ``torch.cuda.max_memory_allocated``.

torch keeps no allocation statistics for the CPU, so the run counts storages itself with precise
mode's counter (``planner.simulate.meta.live_bytes_class``, a dispatch mode adding up every live
storage as it is created and freed; one implementation of storage accounting). At the start of a
measured step the counter is given what already exists (weights with their quantization state,
gradients, optimizer state: ``persistent_tensors``); from then on every tensor an op returns is
added and dropped when its storage dies. Its peak is the step's peak allocated bytes, split by
phase: forward (the Trainer's ``compute_loss``: the model and its loss, either kind), backward
(from there to the optimizer step, gradient clipping included), optimizer step.

The dispatch mode costs time on every op, so only some steps are measured: the first
``FIRST_STEPS`` (the peak settles once the optimizer state exists) and then one in
``EVERY``: on the demo a measured step takes 46% longer, the run 2% (``scripts/bench_tensor_memory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

FIRST_STEPS = 3
EVERY = 25
PHASES = ("forward", "backward", "optimizer step")


@dataclass(frozen=True)
class TensorPeak:
    bytes: int
    """The largest live tensor storage of the measured steps."""
    phase: str
    """Where it happened: one of :data:`PHASES`."""


def measured(step: int) -> bool:
    """Whether step ``step`` (1-based) is measured."""
    return step <= FIRST_STEPS or step % EVERY == 0


class TensorMeter(TrainerCallback):
    """Measures live tensor bytes on the steps :func:`measured` picks; ``peak`` after the first."""

    def __init__(self) -> None:
        self.peak: TensorPeak | None = None
        self._counter: Any = None
        self._phase = ""
        self._phase_peaks: dict[str, int] = {}

    def attach(self, trainer: Any) -> None:
        """Measure ``trainer``'s steps: its ``compute_loss`` marks the forward phase."""
        compute_loss = trainer.compute_loss

        def forward_then_backward(*args: Any, **kwargs: Any) -> Any:
            self._switch("forward")
            out = compute_loss(*args, **kwargs)
            self._switch("backward")
            return out

        trainer.compute_loss = forward_then_backward
        trainer.add_callback(self)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not measured(state.global_step + 1) or model is None:
            return
        from planner.simulate.meta import live_bytes_class, persistent_tensors

        self._counter = live_bytes_class()(gpu_kernels=False)
        for tensors in persistent_tensors(model, optimizer).values():
            for tensor in tensors:
                self._counter.track(tensor)
        self._phase_peaks = dict.fromkeys(PHASES, 0)
        self._phase = "forward"
        self._counter.reset_peak()
        self._counter.__enter__()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._switch("optimizer step")

    def on_step_end(self, args, state, control, **kwargs):
        if self._counter is None:
            return
        self._switch("")
        self._counter.__exit__(None, None, None)
        self._counter = None
        phase = max(PHASES, key=self._phase_peaks.__getitem__)
        if self.peak is None or self._phase_peaks[phase] > self.peak.bytes:
            self.peak = TensorPeak(self._phase_peaks[phase], phase)

    def peak_bytes(self) -> int:
        """The peak so far (0 before the first measured step ends): what a step event reports."""
        return self.peak.bytes if self.peak else 0

    def close(self) -> None:
        """Leave the dispatch mode if a step did not end (an error unwound it mid-step)."""
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None

    def _switch(self, phase: str) -> None:
        """Close the current phase at its peak and start ``phase`` ("" ends the step)."""
        if self._counter is None or phase == self._phase:
            return
        if self._phase:
            self._phase_peaks[self._phase] = max(self._phase_peaks[self._phase], self._counter.peak)
        self._counter.reset_peak()
        self._phase = phase
