#!/usr/bin/env python3
"""The time model across GPU generations (issue 19): predicted tokens/s of Llama-3.1-8B LoRA at
2,048 tokens on an RTX 4090, A100, H100 and B200; then the one recipe published on an RTX 5090, an
H100 and a B200 (0.39 : 1 : 1.39), predicted as it ran. That recipe is Unsloth's 16-bit LoRA of
Qwen3-8B in Surogate's benchmark table, which is reserved for independent checks: predicted,
never fitted.

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
from planner.stacks import load_stack  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B"
GPUS = ("RTX 4090", "A100 80GB SXM", "H100 SXM", "B200")

RECIPE_MODEL = "Qwen/Qwen3-8B"
RECIPE = {"method": "lora", "lora_r": 16, "batch_size": 2, "gradient_accumulation_steps": 4, "seq_len": 2048,
          "optimizer": "adamw_8bit"}
"""invergent-ai/surogate docs/reference/benchmarks.md @524fb776 (L84-94; benchmarks/run-unsloth.py @b83c340c):
Unsloth's FastLanguageModel under TRL, LoRA r16 on all seven projections, 2 x 2,048 packed tokens,
accumulation 4, adamw_8bit, Unsloth's defaults for the rest (planned with the ``unsloth`` preset:
its kernels and offloaded checkpointing)."""
PUBLISHED = {"RTX 5090": 3500, "H100 SXM": 8900, "B200": 12400}
"""The recipe's "Unsloth BF16" Qwen3-8B tokens/s (benchmarks.md L13, L32, L52 @524fb776)."""


def main() -> int:
    arch = resolve_model(MODEL).arch
    print("| GPU | generation | predicted tokens/s (Llama-3.1-8B LoRA, 2,048 tokens) |")
    print("|---|---|---:|")
    for name in GPUS:
        tps = run_cost(arch, TrainSetup(method="lora", seq_len=2048), find_gpu(name)).tokens_per_second
        print(f"| {name} | {find_gpu(name).generation} | {tps:,.0f} |")

    setup = load_stack("unsloth").apply(TrainSetup(), **RECIPE)
    recipe_arch = resolve_model(RECIPE_MODEL).arch
    speeds = {name: run_cost(recipe_arch, setup, find_gpu(name)).tokens_per_second for name in PUBLISHED}
    print(f"\n| GPU | {RECIPE_MODEL} LoRA under Unsloth: published tokens/s | predicted | error |")
    print("|---|---:|---:|---:|")
    for name, measured in PUBLISHED.items():
        print(f"| {name} | {measured:,} | {speeds[name]:,.0f} | {speeds[name] / measured - 1:+.0%} |")
    predicted = " : ".join(f"{speeds[n] / speeds['H100 SXM']:.2f}" for n in PUBLISHED)
    published = " : ".join(f"{PUBLISHED[n] / PUBLISHED['H100 SXM']:.2f}" for n in PUBLISHED)
    print(f"\n{' : '.join(PUBLISHED)}: predicted {predicted}, published {published}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
