"""Opening a run directory, and following one that trains in the background (an earlier session
of the app detached it).

Its trainer is not our child: there is no stdout to read and no stdin to write. Its history
grows in ``metrics.jsonl`` (read incrementally, complete lines only), and the protocol's
"SIGTERM means stop" is the one command we can still give. Qt-free.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from planner.gui.train.run_model import RunModel, replay
from planner.runs import EventReader, read_run
from trainer.protocol import Event
from trainer.rundir import CONFIG, read_json


class RunFollower:
    def __init__(self, run_dir: Path, pid: int, offset: int) -> None:
        self.run_dir = run_dir
        self.pid = pid
        self.reader = EventReader(run_dir)
        self.reader.offset = offset  # what the replay already read

    def poll(self) -> list[Event]:
        """Events appended since the last poll."""
        return self.reader.read_new()

    def alive(self) -> bool:
        # the Runs page's rule (a live process whose command line names the trainer): a reused PID is not it
        return read_run(self.run_dir).status == "running"

    def stop(self) -> bool:
        """SIGTERM = stop: the trainer saves a resumable checkpoint and ends. Sent only while the PID
        is still that trainer (its recorded start time): never to a process that reused the number."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signal.SIGTERM)
        except OSError:
            return False
        return True


def open_history(run_dir: Path) -> tuple[RunModel, RunFollower | None]:
    """Replay a run's metrics.jsonl (torn lines skipped) and, if its trainer still works in the
    background, a follower that picks up exactly where the replay stopped reading."""
    try:
        data = (run_dir / "metrics.jsonl").read_bytes()
    except OSError:
        data = b""
    summary = read_run(run_dir)
    live = summary.status == "running" and summary.pid is not None
    # a live trainer may be mid-line: its last line is read once its newline arrives
    done = data[: data.rfind(b"\n") + 1] if live else data
    model = replay(done.decode("utf-8", errors="replace").splitlines())
    model.run_dir = str(run_dir)
    if not (live and model.end is None):
        return model, None
    model.status, model.background_pid = "background", summary.pid
    return model, RunFollower(run_dir, int(summary.pid or 0), len(done))


def read_config(run_dir: Path) -> dict:
    """The run's config.json as TrainConfig fields; {} when missing or unreadable."""
    return read_json(run_dir / CONFIG)
