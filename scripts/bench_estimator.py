#!/usr/bin/env python3
"""Figures for the estimator: time per estimate, and `planner table` / `estimate` wall time
with Python start-up included (the targets: < 1 ms per estimate, < 0.5 s for the table).

    python scripts/bench_estimator.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.catalog import catalog, resolve_model  # noqa: E402
from planner.memory import estimate  # noqa: E402
from planner.options import TrainSetup  # noqa: E402


def per_estimate_us() -> tuple[float, int]:
    specs = [resolve_model(i) for i in catalog()]
    setups = [TrainSetup(method=m) for m in ("full", "lora", "qlora")]
    n = 0
    start = time.perf_counter()
    for _ in range(5):
        for spec in specs:
            for s in setups:
                estimate(spec, s)
                n += 1
    return (time.perf_counter() - start) / n * 1e6, n


def wall(args: list[str], repeat: int = 7) -> float:
    """Median wall time of ``python ARGS`` in a fresh interpreter."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    us, n = per_estimate_us()
    baseline = wall(["-c", "pass"])
    table = wall(["-m", "planner", "table"])
    est = wall(["-m", "planner", "estimate", "--model", "meta-llama/Llama-3.1-70B", "--method", "qlora", "--json"])
    print(f"estimate():                     {us:8.1f} us per call (mean of {n}, whole catalog x 3 methods)")
    print(f"python -c pass:                 {baseline * 1000:8.1f} ms (interpreter start-up alone)")
    print(f"python -m planner table:        {table * 1000:8.1f} ms wall, median of 7 (42 estimates)")
    print(f"python -m planner estimate:     {est * 1000:8.1f} ms wall, median of 7")


if __name__ == "__main__":
    main()
