"""The run's clock: its total time across sessions, and the time left at the recent pace.

Standard library only. A run stopped and resumed is one run: each session adds its own time to
the total the sessions before it recorded, so ``run.json``, the ``end`` event and the Runs page
say how long the run trained, not how long its last session did.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path

from trainer.rundir import METRICS, SUMMARY, history_tail, read_json

RECENT_LOGS = 5
"""How many logged intervals the ETA's pace averages over (see :class:`Pace`)."""


def runtime_before(run_dir: Path) -> float:
    """Seconds the earlier sessions of this run took: the latest total they recorded.

    A clean end writes it to ``run.json``; a killed session never does, but each of its step
    events carries the total so far, so its time is not lost either. Totals only grow, so the
    larger of the two is the latest."""
    recorded = read_json(run_dir / SUMMARY).get("runtime_s")
    return max(_seconds(recorded), _seconds(_last_total(run_dir / METRICS)))


def _last_total(metrics: Path) -> object:
    """The ``runtime_s`` of the last step or end event in the history's tail, or None."""
    for raw in reversed(history_tail(metrics)):
        try:
            event = json.loads(raw)
        except ValueError:  # a torn last line, or the cut-off first one
            continue
        if isinstance(event, dict) and event.get("event") in ("step", "end") and "runtime_s" in event:
            return event["runtime_s"]
    return None


def _seconds(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else 0.0


class Pace:
    """Time per step over a sliding window of the last :data:`RECENT_LOGS` logged intervals.

    Why a window and not an average since the start (what the ETA was): a run that slows down
    (another job takes the GPU, the host starts swapping, a thermal throttle) would keep promising
    the old pace, and a resumed run would divide one session's time by every step of the run.
    Why a window rather than an exponentially weighted mean: the window forgets the old pace
    completely after N logs, so after a 10x slowdown the ETA is right five logs later (an EWMA
    of similar smoothing still carries a share of the old pace, however long the run goes on).
    The pace is seconds over steps across the whole window, not a mean of per-interval rates,
    so uneven intervals (an eval, a checkpoint save) weigh by their length and drop out once N
    logs have passed.
    """

    def __init__(self, window: int = RECENT_LOGS) -> None:
        self._marks: deque[tuple[int, float]] = deque(maxlen=window + 1)

    def mark(self, step: int, now: float) -> None:
        """Step ``step`` was done at ``now`` (monotonic seconds); the first mark is the starting line."""
        if self._marks and step <= self._marks[-1][0]:
            self._marks.clear()  # the step count went back (a new session): the old pace is void
        self._marks.append((step, now))

    def seconds_per_step(self) -> float | None:
        if len(self._marks) < 2:
            return None
        (first_step, first_t), (last_step, last_t) = self._marks[0], self._marks[-1]
        return (last_t - first_t) / (last_step - first_step)

    def eta(self, remaining_steps: int) -> float | None:
        """Seconds until ``remaining_steps`` more steps are done at the recent pace; None before any."""
        per_step = self.seconds_per_step()
        return None if per_step is None else per_step * max(remaining_steps, 0)
