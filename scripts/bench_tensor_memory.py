#!/usr/bin/env python3
"""What measuring a CPU run's tensor memory costs (trainer/tensor_memory.py, issue 16).

The demo run (QLoRA, batch 8, up to 64 tokens) trains with the meter on every step and with it
off, in alternating pairs (median of each); a measured step's cost is the difference, and the
run's overhead is that cost times the share of steps the meter measures (the first 3, then one
in 25). One torch thread: the loaded 2-core machines these run on otherwise time the oversubscription.

    python scripts/bench_tensor_memory.py [--steps 30] [--pairs 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer import tensor_memory  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.demo import make_demo  # noqa: E402
from trainer.run import Run  # noqa: E402
from trainer.rundir import write_marker  # noqa: E402


def seconds_per_step(cfg: TrainConfig, run_dir: Path, every_step: bool) -> tuple[float, int]:
    """(seconds per step of ``trainer.train()``, the peak measured) with the meter on every step or none."""
    run_dir.mkdir(parents=True)
    write_marker(run_dir)
    run = Run(cfg, run_dir, resume=False, stdin=io.StringIO(""), out=io.StringIO())
    with mock.patch.object(tensor_memory, "measured", lambda step: every_step):
        run.setup()
        start = time.perf_counter()
        run.train()
        elapsed = time.perf_counter() - start
    peak = run.meter.peak_bytes()
    run.close()
    return elapsed / run.trainer.state.global_step, peak


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_demo(work / "demo")
        base = TrainConfig.load(work / "demo" / "run.json")
        times: dict[bool, list[float]] = {True: [], False: []}
        peak = 0
        for i in range(args.pairs):
            for on in (False, True):
                cfg = TrainConfig.from_dict({**base.to_dict(), "max_steps": args.steps, "save_steps": 0,
                                             "output_dir": str(work / f"run-{i}-{on}")})
                seconds, measured_peak = seconds_per_step(cfg, work / f"run-{i}-{on}", on)
                times[on].append(seconds)
                peak = max(peak, measured_peak)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    share = sum(tensor_memory.measured(s) for s in range(1, 1001)) / 1000
    print(f"demo step: {off * 1000:.1f} ms unmeasured, {on * 1000:.1f} ms measured "
          f"({on / off - 1:+.1%} per measured step); peak tensor memory {peak / 2**20:.1f} MiB")
    print(f"measured share over 1,000 steps: {share:.1%}; run overhead {share * (on / off - 1):+.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
