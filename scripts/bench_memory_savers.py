"""The longest sequence that fits, per GPU size, with each memory-saving technique alone and all
together (issue 15), from the analytic estimator.

    python scripts/bench_memory_savers.py            # a Markdown table on stdout
    python scripts/bench_memory_savers.py --json

"Fits" means device memory as nvidia-smi would show it (peak reserved + CUDA context) within the
card, with no headroom: the recommender keeps 10% free on top. Micro-batch 1, gradient
checkpointing on, 8-bit paged AdamW, flash attention, LoRA r32 on all linear layers: the setup
of Unsloth's and Hugging Face's published long-context QLoRA figures.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from planner.catalog import resolve_model
from planner.memory import estimate
from planner.options import TrainSetup
from planner.units import GiB

CASES = (("meta-llama/Llama-3.1-8B", "qlora"), ("mistralai/Mistral-7B-v0.1", "qlora"),
         ("meta-llama/Llama-2-70b-hf", "qlora"))
GPU_GIB = (16, 24, 48, 80)
TECHNIQUES = {
    "plain": {},
    "chunked loss": {"loss": "chunked"},
    "no fp32 upcast": {"kbit_prepare": False},
    "both": {"loss": "chunked", "kbit_prepare": False},
}
LIMIT = 1 << 20


def longest(model_id: str, setup: TrainSetup, budget: int) -> int:
    """The largest sequence length whose device memory fits ``budget`` (0 when 1 token does not)."""
    model = resolve_model(model_id)

    def fits(seq: int) -> bool:
        return estimate(model, replace(setup, seq_len=seq)).device_used_bytes <= budget

    if not fits(1):
        return 0
    lo, hi = 1, LIMIT
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def rows() -> list[dict]:
    out = []
    for model_id, method in CASES:
        base = TrainSetup(method=method, optimizer="paged_adamw_8bit", attention="flash_attention_2", lora_r=32,
                          lora_alpha=64, grad_checkpointing=True, batch_size=1)
        for gib in GPU_GIB:
            seqs = {name: longest(model_id, replace(base, **changes), int(gib * GiB))
                    for name, changes in TECHNIQUES.items()}
            out.append({"model": model_id, "method": method, "gpu_gib": gib, **seqs})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    names = list(TECHNIQUES)
    print("| model | GPU | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for r in table:
        print(f"| {r['model']} {r['method']} | {r['gpu_gib']} GiB | "
              + " | ".join(f"{r[n]:,}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
