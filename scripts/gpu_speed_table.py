#!/usr/bin/env python3
"""The time model across GPU generations (issue 19): predicted tokens/s of Llama-3.1-8B LoRA at
2,048 tokens on an RTX 4090, A100, H100 and B200, and the RTX 5090 : H100 : B200 ratio beside the
one published runs of a single recipe measured (0.39 : 1 : 1.39; issue 19's survey, not a
calibration row).

    python scripts/gpu_speed_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.catalog import resolve_model  # noqa: E402
from planner.catalog.gpus import find_gpu  # noqa: E402
from planner.cost import run_cost  # noqa: E402
from planner.options import TrainSetup  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B"
GPUS = ("RTX 4090", "A100 80GB SXM", "H100 SXM", "B200")
RATIO_GPUS = ("RTX 5090", "H100 SXM", "B200")
PUBLISHED_RATIO = (0.39, 1.0, 1.39)


def main() -> int:
    arch = resolve_model(MODEL).arch

    def tps(name: str) -> float:
        return run_cost(arch, TrainSetup(method="lora", seq_len=2048), find_gpu(name)).tokens_per_second

    print("| GPU | generation | predicted tokens/s (Llama-3.1-8B LoRA, 2,048 tokens) |")
    print("|---|---|---:|")
    for name in GPUS:
        print(f"| {name} | {find_gpu(name).generation} | {tps(name):,.0f} |")
    speeds = [tps(name) for name in RATIO_GPUS]
    predicted = " : ".join(f"{s / speeds[1]:.2f}" for s in speeds)
    published = " : ".join(f"{r:.2f}" for r in PUBLISHED_RATIO)
    print(f"\n{' : '.join(RATIO_GPUS)}: predicted {predicted}, published {published}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
