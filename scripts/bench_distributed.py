#!/usr/bin/env python3
"""Multi-process figures on the offline demo model (2 CPU processes over gloo here; the same
script runs on GPUs): for one process and for DDP and FSDP over ``--processes``, the wall time
from launch to the first ``step`` event and to the end, and the steps per second between them,
at the same global batch. Ratios within one run are what to compare (these machines are noisy).

    python scripts/bench_distributed.py [--steps 30] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.demo import make_demo

ROOT = Path(__file__).resolve().parents[1]


def launch(config: Path) -> tuple[float, float, int]:
    """(seconds to the first step event, seconds to the end, steps) of one `trainer run`."""
    start = time.perf_counter()
    first = None
    steps = 0
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "run", "--config", str(config)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "step":
            first = first or time.perf_counter() - start
            steps = event["step"]
    if proc.wait() != 0:
        raise SystemExit(f"{config.name}: the run failed")
    return first or 0.0, time.perf_counter() - start, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp:
        demo = make_demo(Path(tmp) / "demo")
        base = json.loads(demo.read_text())
        print(f"{'setup':22} {'first step s':>12} {'total s':>8} {'steps/s':>8}")
        for name, changes in (("1 process", {"num_processes": 1, "batch_size": 8}),
                              (f"{n} processes, DDP", {"num_processes": n, "sharding": "ddp", "batch_size": 8 // n}),
                              (f"{n} processes, FSDP", {"num_processes": n, "sharding": "fsdp", "batch_size": 8 // n})):
            config = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.json"
            config.write_text(json.dumps({**base, **changes, "method": "lora", "max_steps": args.steps,
                                          "save_steps": 0, "output_dir": str(Path(tmp) / "runs" / config.stem)}))
            first, total, steps = launch(config)
            print(f"{name:22} {first:12.1f} {total:8.1f} {(steps - 1) / max(total - first, 1e-9):8.1f}")


if __name__ == "__main__":
    main()
