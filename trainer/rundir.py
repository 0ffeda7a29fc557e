"""The run directory's layout: what the trainer writes there, and how a finished checkpoint is told
from one a kill interrupted. Standard library only."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.files import atomic_write_text

PID_FILE = "trainer.pid"
"""Present while a trainer process works in the run directory; holds its PID."""
COMPLETE_MARKER = ".complete"
"""Written into a checkpoint once every rank finished every file of it."""
_COMPLETE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


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
    for p in (run_dir / "checkpoints").glob("checkpoint-*"):
        step = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and step.isdigit() and complete(p):
            found.append((int(step), p))
    return max(found)[1] if found else None
