"""A data set's example lengths for the time model, measured by the trainer's own tokenization.

``python -m trainer lengths`` tokenizes the file exactly as a run would (it needs the model's
tokenizer, and so transformers); the planner core stays torch-free by running it in a subprocess
and reading its one JSON line. Results are kept per (model, file as last modified): planning the
same data again, in the app or a script, costs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from planner.errors import PlannerError
from planner.samples import SampleLengths

TIMEOUT_S = 600.0
"""Longest the tokenization may take: about a million chat examples on one core."""


_MEASURED: dict[tuple[str, str, int, int], SampleLengths] = {}
"""Lengths measured so far, by (model, file, its modification time and size)."""


def measure_lengths(model: str, data: str) -> SampleLengths:
    """Tokens per example of ``data`` under ``model``'s tokenizer (planner/samples.py); blocks
    while the trainer tokenizes a file not measured before (run it off the GUI thread)."""
    key = _key(model, data)
    if key not in _MEASURED:
        _MEASURED[key] = _measure(model, key[1])
    return _MEASURED[key]


def measured_lengths(model: str, data: str) -> SampleLengths | None:
    """The lengths :func:`measure_lengths` already has for this file as it is now, else None:
    never tokenizes, so the GUI thread may ask."""
    try:
        return _MEASURED.get(_key(model, data))
    except PlannerError:
        return None


def _key(model: str, data: str) -> tuple[str, str, int, int]:
    path = Path(data).expanduser()
    if not path.is_file():
        raise PlannerError(f"--data {data}: no such file; give the training data (.jsonl, .json, .csv or .parquet)",
                           "data")
    stat = path.stat()
    return model, str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _measure(model: str, data: str) -> SampleLengths:
    command = [sys.executable, "-m", "trainer", "lengths", "--model", model, "--data", data]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PlannerError(f"--data {data}: tokenizing took over {TIMEOUT_S:.0f} s; plan with --dataset-tokens "
                           "instead", "data") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        why = errors[-1].removeprefix("error:").strip() if errors else f"the trainer exited with {done.returncode}"
        raise PlannerError(f"--data: {why}", "data")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return SampleLengths(int(fields["count"]), int(fields["total"]), tuple(int(q) for q in fields["quantiles"]))
