#!/usr/bin/env python3
"""Figures for precise mode: wall time and peak RSS of `python -m planner simulate`, each run in
its own process (torch and transformers imports included), against the targets: Llama-2-70B
LoRA under 15 s, Mixtral-8x22B QLoRA under 30 s, RSS under 2 GiB.

    python scripts/bench_simulate.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = (
    ("meta-llama/Llama-2-7b-hf", "lora"),
    ("meta-llama/Llama-2-70b-hf", "lora"),
    ("meta-llama/Llama-2-70b-hf", "qlora"),
    ("meta-llama/Llama-3.1-405B", "qlora"),
    ("mistralai/Mixtral-8x22B-v0.1", "qlora"),
)


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_bytes: int
    exit_code: int
    stderr: str


def run_simulate(*args: str) -> Run:
    """One `planner simulate` child; its own peak RSS from wait4 (not its siblings')."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "planner", "simulate", *args, "--json"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return Run(time.perf_counter() - start, usage.ru_maxrss * 1024, child.returncode, stderr)


def main() -> int:
    print(f"{'model':32} {'method':6} {'wall s':>7} {'RSS MiB':>8}  result")
    for model, method in CASES:
        r = run_simulate("--model", model, "--method", method)
        result = "simulated" if r.exit_code == 0 else r.stderr.strip().splitlines()[-1][:90]
        print(f"{model:32} {method:6} {r.seconds:7.1f} {r.max_rss_bytes / 2**20:8.0f}  {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
