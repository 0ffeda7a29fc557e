#!/usr/bin/env python3
"""Trainer figures on the offline demo model (CPU here; the same script runs on a GPU):

1. monitoring overhead: steps/s with our event callback against the same run without it
   (alternating pairs, median; target: at most 2% slower);
2. time from launching ``python -m trainer run`` to its first ``step`` event;
3. steps/s for each method.

    python scripts/bench_trainer.py [--steps 40] [--pairs 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer.config import TrainConfig  # noqa: E402
from trainer.demo import make_demo  # noqa: E402
from trainer.run import Run  # noqa: E402


def timed_run(cfg: TrainConfig, run_dir: Path, monitored: bool) -> float:
    """Seconds per optimizer step of ``trainer.train()`` (model loading excluded)."""
    run_dir.mkdir(parents=True)
    run = Run(cfg, run_dir, resume=False, stdin=io.StringIO(""), out=io.StringIO())
    run.setup()
    if not monitored:
        run.trainer.remove_callback(run.callback)
    start = time.perf_counter()
    run.train()
    elapsed = time.perf_counter() - start
    run.sink.close()
    return elapsed / run.trainer.state.global_step


def callback_cost_s(work: Path, n: int = 2000) -> float:
    """Seconds our callback adds per logged step, measured in isolation (no training noise)."""
    from types import SimpleNamespace

    from trainer.callbacks import EventCallback
    from trainer.events import Commands, EventSink

    sink = EventSink(work / "cost" / "metrics.jsonl", out=io.StringIO())
    callback = EventCallback(sink, Commands(io.StringIO(""), install_signal=False), "cpu")
    state = SimpleNamespace(global_step=5, epoch=0.1, max_steps=100, num_input_tokens_seen=1000)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    logs = {"loss": 1.0, "learning_rate": 1e-3, "grad_norm": 2.0}
    start = time.perf_counter()
    for _ in range(n):
        callback.on_log(None, state, control, logs=logs)
        callback.on_step_end(None, state, control)
    sink.close()
    return (time.perf_counter() - start) / n


def first_step_latency(config: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "run", "--config", str(config)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if json.loads(line)["event"] == "step":
            latency = time.perf_counter() - start
            proc.stdin.write("cancel\n")
            proc.stdin.flush()
            break
    else:
        latency = float("nan")
    proc.communicate(timeout=120)
    return latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--pairs", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = TrainConfig.load(make_demo(work / "demo"))

        def cfg(name: str, **kw) -> TrainConfig:
            return TrainConfig(**{**base.to_dict(), "output_dir": str(work / name), "max_steps": args.steps,
                                  "save_steps": 0, **kw})

        timed_run(cfg("warmup", method="lora"), work / "warmup", monitored=False)  # caches, lazy imports
        on, off = [], []
        for i in range(args.pairs):
            # alternate which goes first: the machine's speed drifts, and order must not bias the ratio
            for monitored in ((True, False) if i % 2 == 0 else (False, True)):
                name = f"{'on' if monitored else 'off'}{i}"
                (on if monitored else off).append(timed_run(cfg(name, method="lora"), work / name, monitored))
        overhead = statistics.median(on) / statistics.median(off) - 1
        cost = callback_cost_s(work)
        print(f"event callback alone: {cost * 1e6:.0f} us per step = {cost / statistics.median(off):.2%} "
              f"of a {statistics.median(off) * 1e3:.0f} ms step")
        print(f"monitoring overhead (LoRA, {args.steps} steps x {args.pairs} pairs): "
              f"{1 / statistics.median(on):.2f} steps/s with events, {1 / statistics.median(off):.2f} without "
              f"-> {overhead:+.1%}")

        config = work / "latency.json"
        cfg("latency", method="qlora", max_steps=1000).dump(config)
        print(f"launch -> first step event (QLoRA, fresh interpreter): {first_step_latency(config):.2f} s")

        for method in ("full", "lora", "qlora"):
            per_step = timed_run(cfg(f"m-{method}", method=method), work / f"m-{method}", monitored=True)
            print(f"{method:>5}: {1 / per_step:.2f} steps/s (batch {base.batch_size} x <= {base.max_seq_len} tokens)")


if __name__ == "__main__":
    main()
