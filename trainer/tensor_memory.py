"""Peak tensor memory per phase of a training step, on the CPU and on CUDA.

One phase tracker (:class:`PhaseTracker`, a ``TrainerCallback``) marks the phases of a step:
forward (the Trainer's ``compute_loss``: the model and its loss, either kind), backward (from
there to ``on_pre_optimizer_step``, gradient clipping included) and optimizer step (to
``on_step_end``). At each boundary it asks a probe for the peak since the previous boundary, and
keeps its own per-phase maxima over the run. Two probes:

- :class:`CudaProbe`: torch's own allocator statistics. At each boundary it reads
  ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` and calls
  ``torch.cuda.reset_peak_memory_stats``; the tracker's running maximum over every reading
  (time outside steps included: loading, evaluation, saving, as :data:`OUTSIDE`) is the run's
  ``max_memory_allocated`` as if nothing had been reset. Anything that wants the run's peak reads
  the tracker, never torch's counter. Every step is measured: the calls cost microseconds.
- :class:`CpuProbe`: torch keeps no allocation statistics for the CPU, so the run counts storages
  itself with precise mode's counter (``planner.simulate.meta.live_bytes_class``, a dispatch mode
  adding up every live storage as it is created and freed; one implementation of storage
  accounting). At the start of a measured step the counter is given what already exists (weights
  with their quantization state, gradients, optimizer state: ``persistent_tensors``); from then
  on every tensor an op returns is added and dropped when its storage dies. The dispatch mode
  costs time on every op, so only some steps are measured: the first ``FIRST_STEPS`` (the peak
  settles once the optimizer state exists) and then one in ``EVERY``: on the demo a measured step
  takes 46% longer, the run 2% (``scripts/bench_tensor_memory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from transformers import TrainerCallback

FIRST_STEPS = 3
EVERY = 25
PHASES = ("forward", "backward", "optimizer step")
OUTSIDE = "outside a step"
"""Where a CUDA peak falls between steps (loading, evaluation, saving); the CPU counts only inside
measured steps, so it never reports this."""


@dataclass(frozen=True)
class TensorPeak:
    bytes: int
    """The largest live tensor storage measured."""
    phase: str
    """Where it happened: one of :data:`PHASES`, or :data:`OUTSIDE` (CUDA)."""


def measured(step: int) -> bool:
    """Whether step ``step`` (1-based) is measured on the CPU."""
    return step <= FIRST_STEPS or step % EVERY == 0


class Probe(Protocol):
    def begin(self, step: int, model: Any, optimizer: Any) -> bool:
        """Start measuring step ``step`` (1-based); False: this step is not measured."""

    def read(self) -> int:
        """Peak allocated bytes since the previous read (or begin), and start a new interval."""

    def peek(self) -> int:
        """The current interval's peak so far, without starting a new one (0 if unknown)."""

    def reserved(self) -> int:
        """Peak reserved bytes of the whole run (0 where there is no caching allocator)."""

    def end(self) -> None:
        """The measured step ended (or an error unwound it)."""


class CudaProbe:
    """torch.cuda's allocator statistics, reset at each phase boundary. ``cuda``: the module with
    ``max_memory_allocated``, ``max_memory_reserved`` and ``reset_peak_memory_stats`` (torch.cuda;
    a test passes a fake). Both read the current device, the one this rank trains on."""

    def __init__(self, cuda: Any = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.cuda = cuda
        self._reserved = 0

    def begin(self, step: int, model: Any, optimizer: Any) -> bool:
        return True

    def read(self) -> int:
        alloc = int(self.cuda.max_memory_allocated())
        # the reset clears the reserved peak too: keep its running maximum here
        self._reserved = max(self._reserved, int(self.cuda.max_memory_reserved()))
        self.cuda.reset_peak_memory_stats()
        return alloc

    def peek(self) -> int:
        return int(self.cuda.max_memory_allocated())

    def reserved(self) -> int:
        return max(self._reserved, int(self.cuda.max_memory_reserved()))

    def end(self) -> None:
        pass


class CpuProbe:
    """Live tensor storages counted by a dispatch mode, on the steps :func:`measured` picks."""

    def __init__(self) -> None:
        self._counter: Any = None

    def begin(self, step: int, model: Any, optimizer: Any) -> bool:
        if not measured(step) or model is None:
            return False
        from planner.simulate.meta import live_bytes_class, persistent_tensors

        self._counter = live_bytes_class()(gpu_kernels=False)
        for tensors in persistent_tensors(model, optimizer).values():
            for tensor in tensors:
                self._counter.track(tensor)
        self._counter.reset_peak()
        self._counter.__enter__()
        return True

    def read(self) -> int:
        if self._counter is None:
            return 0
        peak = int(self._counter.peak)
        self._counter.reset_peak()
        return peak

    def peek(self) -> int:
        return 0  # a step event reports completed measured steps only

    def reserved(self) -> int:
        return 0

    def end(self) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None


class PhaseTracker(TrainerCallback):
    """Marks the phases of each step for ``probe`` and keeps the per-phase peaks of the run."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.peaks: dict[str, int] = dict.fromkeys((*PHASES, OUTSIDE), 0)
        """The largest reading of each phase over the run (bytes; 0 until measured)."""
        self.peak_shape: tuple[int, int] | None = None
        """(rows, padded length) of the micro-batch in flight when the run's peak was read: without
        packing, batches are padded to their longest sample, so the peak step's shape, not
        max_seq_len, is what a like-for-like prediction needs."""
        self._shape: tuple[int, int] | None = None
        self._phase = OUTSIDE

    def attach(self, trainer: Any) -> None:
        """Measure ``trainer``'s steps: its ``compute_loss`` marks the forward phase."""
        compute_loss = trainer.compute_loss

        def forward_then_backward(*args: Any, **kwargs: Any) -> Any:
            inputs = kwargs.get("inputs", args[1] if len(args) > 1 else None)
            ids = inputs.get("input_ids") if isinstance(inputs, dict) else None
            if ids is not None and ids.dim() == 2:
                self._shape = (int(ids.shape[0]), int(ids.shape[1]))
            self._switch("forward")
            out = compute_loss(*args, **kwargs)
            self._switch("backward")
            return out

        trainer.compute_loss = forward_then_backward
        trainer.add_callback(self)

    # -- the phases -------------------------------------------------------------------------
    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.settle()  # what happened since the last step (CUDA)
        if self.probe.begin(state.global_step + 1, model, optimizer):
            self._phase = "forward"

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._switch("optimizer step")

    def on_step_end(self, args, state, control, **kwargs):
        if self._phase == OUTSIDE:
            return
        self._fold()
        self._phase = OUTSIDE
        self.probe.end()

    def _switch(self, phase: str) -> None:
        """Close the current phase at its peak and start ``phase`` (only inside a measured step:
        evaluation's ``compute_loss`` runs outside one)."""
        if self._phase == OUTSIDE or phase == self._phase:
            return
        self._fold()
        self._phase = phase

    def _fold(self) -> None:
        reading = self.probe.read()
        if reading > max(self.peaks.values()) and self._phase != OUTSIDE:
            self.peak_shape = self._shape
        self.peaks[self._phase] = max(self.peaks[self._phase], reading)

    # -- the figures ------------------------------------------------------------------------
    def settle(self) -> None:
        """Fold in the peak since the last step ended (CUDA: saving, evaluation, loading)."""
        if self._phase == OUTSIDE:
            self._fold()

    @property
    def peak(self) -> TensorPeak | None:
        """The largest reading so far and its phase; None before anything was measured."""
        phase = max(self.peaks, key=self.peaks.__getitem__)
        return TensorPeak(self.peaks[phase], phase) if self.peaks[phase] else None

    def peak_bytes(self) -> int:
        """The run's peak allocated bytes so far (CUDA: ``max_memory_allocated`` as if never reset;
        the CPU: over the completed measured steps; 0 before any): what a step event reports."""
        return max(max(self.peaks.values()), self.probe.peek())

    def reserved_bytes(self) -> int:
        """The run's peak reserved bytes so far (CUDA's ``max_memory_reserved``; 0 on the CPU)."""
        return self.probe.reserved()

    def phase_bytes(self) -> dict[str, int | None]:
        """``peak_forward_bytes``, ``peak_backward_bytes``, ``peak_optimizer_bytes`` (None: never
        measured): the end event's and run.json's per-phase peaks."""
        names = dict(zip(PHASES, ("peak_forward_bytes", "peak_backward_bytes", "peak_optimizer_bytes")))
        return {names[p]: self.peaks[p] or None for p in PHASES}

    def close(self) -> None:
        """Leave the CPU's dispatch mode if a step did not end (an error unwound it mid-step)."""
        self.probe.end()
        self._phase = OUTSIDE


def tracker(device: str) -> PhaseTracker:
    """The phase tracker for a run on ``device`` ("cuda" or "cpu")."""
    return PhaseTracker(CudaProbe() if device == "cuda" else CpuProbe())
