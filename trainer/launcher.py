"""The launcher of a multi-process run: the process the app starts writes nothing but the
commands file, starts ``python -m torch.distributed.run`` with one trainer per GPU (or CPU
process), relays their events, and ends the protocol itself when they die before rank 0 could.
Standard library only: it never imports torch or transformers (torchrun's workers do).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

from planner.atomic import atomic_write_text
from trainer.distributed import peer_error
from trainer.events import Commands, EventSink
from trainer.protocol import exit_code
from trainer.rundir import COMMANDS_FILE, PEER_ERROR


def launch(run_dir: Path, num_processes: int, resume: bool, stdin: TextIO | None, out: TextIO) -> int:
    """Start the workers and relay their events; returns the run's exit code."""

    commands_file = run_dir / COMMANDS_FILE
    atomic_write_text(commands_file, "")
    for stale in run_dir.glob(PEER_ERROR.format("*")):  # a previous session's
        stale.unlink(missing_ok=True)
    metrics = run_dir / "metrics.jsonl"
    before = metrics.stat().st_size if metrics.is_file() else 0  # a resumed run appends
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
            "-m", "trainer", "run", "--worker", str(run_dir)] + (["--resume", str(run_dir)] if resume else [])
    commands = Commands(stdin)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1)
    done = threading.Event()

    def forward() -> None:
        while not done.wait(0.1):
            pending = commands.drain()
            if pending:
                with open(commands_file, "a", encoding="utf-8") as fh:
                    fh.write("".join(c + "\n" for c in pending))

    forwarder = threading.Thread(target=forward, daemon=True, name="commands-forward")
    forwarder.start()
    try:
        for line in child.stdout:
            try:
                out.write(line)
                out.flush()
            except (BrokenPipeError, ValueError):
                pass
        code = child.wait()
    finally:
        done.set()
        forwarder.join()
        commands.close()
    ended, error = _outcome(metrics, before)
    if not ended:  # the workers died before rank 0 could say so: the protocol still ends
        peer = peer_error(run_dir)
        if peer:
            peer["message"] = f"rank {peer['rank']}: {peer['message']}"
        else:
            peer = {"type": "internal", "message": f"the training processes exited with code {code}",
                    "hint": "this is a bug; the traceback is in the log"}
        sink = EventSink(metrics, out=out)
        sink.emit("error", **peer)
        sink.emit("end", status="failed", steps=0, runtime_s=0.0, output_dir=str(run_dir))
        sink.close()
        error = peer["type"]
    return exit_code(error)


def _outcome(metrics: Path, offset: int) -> tuple[bool, str | None]:
    """Whether this session's events (those past ``offset``) ended, and the error they reported:
    the workers' verdict, since torchrun folds every failure into exit code 1."""
    ended, error = False, None
    try:
        with open(metrics, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "error":
            error = event.get("type")
        elif event.get("event") == "end":
            ended = True
    return ended, error

