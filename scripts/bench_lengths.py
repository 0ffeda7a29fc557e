#!/usr/bin/env python3
"""Figures for planning with the user's data file (``recommend --data``, the Plan page's data file):
tokenizing it through ``python -m trainer lengths``, asking again (cached), what the lengths add
to the time model and to one recommendation, and what padding costs Llama-3.1-8B (docs/recommend.md).

    python scripts/bench_lengths.py [--examples 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA = "meta-llama/Llama-3.1-8B"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # bench_export's helpers, also when a test imports this file

from bench_export import median_s, trainer  # noqa: E402

from planner.batch_shape import as_run  # noqa: E402
from planner.catalog import resolve_model  # noqa: E402
from planner.catalog.gpus import find_gpu  # noqa: E402
from planner.cost import run_cost  # noqa: E402
from planner.lengths import measure_lengths  # noqa: E402
from planner.options import TrainSetup  # noqa: E402
from planner.recommend import recommend  # noqa: E402
from planner.samples import SampleLengths  # noqa: E402
from planner.targets import GpuTarget  # noqa: E402


def _data(path: Path, n: int) -> None:
    """``n`` text examples of 1 to 2,000 words, log-normally spread (median ~55 words)."""
    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran far away over green hills".split()
    with path.open("w") as f:
        for _ in range(n):
            count = min(2000, max(1, int(rng.lognormvariate(4.0, 1.0))))
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(count))}) + "\n")


def padding_table() -> list[str]:
    """Llama-3.1-8B LoRA on log-normal lengths (median ~245, mean ~334 tokens), unpacked and packed."""
    rng = random.Random(0)
    lengths = SampleLengths.of([max(4, int(rng.lognormvariate(5.5, 0.8))) for _ in range(20_000)])
    arch = resolve_model(LLAMA).arch
    lines = ["| GPU | micro-batch | padded to | data share | tokens/s unpacked | packed (2,048) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in ("RTX 4090", "H100 SXM"):
        gpu = find_gpu(name)
        for batch in (1, 8):
            setup = TrainSetup(batch_size=batch, lengths=lengths)
            ran, share = as_run(setup)
            unpacked = run_cost(arch, setup, gpu).tokens_per_second
            packed = run_cost(arch, replace(setup, packing=True), gpu).tokens_per_second
            lines.append(f"| {name} | {batch} | {ran.seq_len:,} | {share:.0%} | {unpacked:,.0f} | {packed:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    n = parser.parse_args().examples
    with tempfile.TemporaryDirectory() as tmp:
        demo, data = Path(tmp) / "demo", Path(tmp) / "data.jsonl"
        trainer("make-demo", "--out", str(demo))
        _data(data, n)
        model = str(demo / "model")
        t0 = time.perf_counter()
        lengths = measure_lengths(model, str(data))
        first = time.perf_counter() - t0
        again = median_s(lambda: measure_lengths(model, str(data)), 20)
    model_spec, gpu = resolve_model(LLAMA), find_gpu("RTX 4090")
    arch = model_spec.arch
    plain = TrainSetup(batch_size=8)
    with_lengths = replace(plain, lengths=lengths)
    cost_plain = median_s(lambda: run_cost(arch, plain, gpu), 200)
    cost_lengths = median_s(lambda: run_cost(arch, with_lengths, gpu), 200)
    target = GpuTarget(gpu.name, gpu.memory_bytes, 1, "catalog", gpu)
    rec_plain = median_s(lambda: recommend(model_spec, plain, target, alternatives=False), 5)
    rec_lengths = median_s(lambda: recommend(model_spec, with_lengths, target, alternatives=False), 5)
    print(f"data: {lengths.count:,} examples, {lengths.total:,} tokens, median {lengths.quantiles[500]}, "
          f"longest {lengths.longest:,}")
    print(f"python -m trainer lengths (first ask):   {first:8.2f} s ({first / n * 1e6:.0f} us per example)")
    print(f"measure_lengths again (same file):       {again * 1e6:8.1f} us")
    print(f"run_cost() without / with lengths:       {cost_plain * 1e3:8.3f} / {cost_lengths * 1e3:.3f} ms")
    print(f"recommend() without / with lengths:      {rec_plain * 1e3:8.1f} / {rec_lengths * 1e3:.1f} ms")
    print()
    print("\n".join(padding_table()))


if __name__ == "__main__":
    main()
