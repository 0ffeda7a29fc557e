"""The longest sequence that fits, per GPU size, with each memory-saving technique alone and all
together (issue 15), from the analytic estimator and, with --precise, from precise mode too.

    python scripts/bench_memory_savers.py            # a Markdown table on stdout
    python scripts/bench_memory_savers.py --precise  # each cell "analytic / precise" (about 5 minutes)
    python scripts/bench_memory_savers.py --json [--precise]

"Fits" means device memory as nvidia-smi would show it (peak reserved + CUDA context) within the
card, with no headroom: the recommender keeps 10% free on top. Micro-batch 1, gradient
checkpointing on, 8-bit paged AdamW, flash attention, LoRA r32 on all linear layers: the setup
of Unsloth's and Hugging Face's published long-context QLoRA figures.

Precise mode (planner.simulate, about 0.5 s a step) is searched only near the analytic answer:
from the analytic longest, steps of x1.05 up or down until the answer flips, then bisection to
within 1% or 64 tokens, whichever is larger (the precise figure is the longest length known to
fit). Rows where the analytic answer is 0 stay 0; a technique precise mode cannot simulate shows
"n/a" and the reason. Offloading techniques need host RAM for the checkpointed layer inputs: the
"host RAM" column (and ``host_gib`` in --json) is what the estimator counts at the analytic longest.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from functools import cache

from planner.catalog import resolve_model
from planner.errors import PlannerError
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
    "offload activations": {"offload_activations": True},
    "all": {"loss": "chunked", "kbit_prepare": False, "offload_activations": True},
}
OFFLOADING = tuple(name for name, changes in TECHNIQUES.items() if changes.get("offload_activations"))
"""The techniques that hold activations in host RAM (the Markdown's "host RAM" column)."""
LIMIT = 1 << 20
STEP = 1.05
"""Precise search: the factor between lengths tried while bracketing the analytic answer."""
PRECISION = 0.01
MIN_SPAN = 64
"""Precise search stops when the bracket is within 1% or 64 tokens, whichever is larger."""


def base_setup(method: str) -> TrainSetup:
    return TrainSetup(method=method, optimizer="paged_adamw_8bit", attention="flash_attention_2", lora_r=32,
                      lora_alpha=64, grad_checkpointing=True, batch_size=1)


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


@cache
def _simulated_used(model_id: str, setup: TrainSetup) -> int:
    """Precise mode's device memory (nvidia-smi's view); cached: rows share lengths and setups."""
    from planner.simulate import simulate  # imports torch: only --precise pays for it

    return simulate(resolve_model(model_id), setup).device_used_bytes


def precise_longest(model_id: str, setup: TrainSetup, budget: int, start: int) -> int:
    """The longest length precise mode finds within ``budget``, searched from ``start`` (the
    analytic answer; 0 stays 0). Raises PlannerError when precise mode cannot simulate the setup."""
    if start <= 0:
        return 0

    def fits(seq: int) -> bool:
        return _simulated_used(model_id, replace(setup, seq_len=seq)) <= budget

    if fits(start):  # lo fits, hi does not
        lo, hi = start, min(LIMIT, math.ceil(start * STEP))
        while hi > lo and fits(hi):
            lo, hi = hi, min(LIMIT, math.ceil(hi * STEP))
        if hi == lo:
            return lo
    else:
        lo, hi = int(start / STEP), start
        while lo >= 1 and not fits(lo):
            lo, hi = int(lo / STEP), lo
        if lo < 1:
            return 0
    while hi - lo > max(MIN_SPAN, int(lo * PRECISION)):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def rows(precise: bool = False) -> list[dict]:
    """One dict per model and GPU size: each technique's analytic longest under its name,
    ``host_gib`` (host RAM at that length, per technique) and, with ``precise``, ``precise`` (the
    precise longest per technique; None where precise mode cannot simulate it, the reason in
    ``precise_errors``)."""
    out = []
    for model_id, method in CASES:
        base = base_setup(method)
        model = resolve_model(model_id)
        for gib in GPU_GIB:
            budget = int(gib * GiB)
            row: dict = {"model": model_id, "method": method, "gpu_gib": gib}
            host, found, errors = {}, {}, {}
            for name, changes in TECHNIQUES.items():
                setup = replace(base, **changes)
                row[name] = seq = longest(model_id, setup, budget)
                host[name] = round(estimate(model, replace(setup, seq_len=seq)).host_bytes / GiB, 2) if seq else 0.0
                if precise:
                    try:
                        found[name] = precise_longest(model_id, setup, budget, seq)
                    except PlannerError as exc:
                        found[name], errors[name] = None, str(exc)
            row["host_gib"] = host
            if precise:
                row["precise"], row["precise_errors"] = found, errors
            out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    """The rows as a Markdown table: analytic longest per technique (``analytic / precise`` when
    the rows have precise figures), then the host RAM the offloading techniques need."""
    names = list(TECHNIQUES)
    lines = ["| model | GPU | " + " | ".join(names) + " | host RAM (" + " / ".join(OFFLOADING) + ") |",
             "|---|---:|" + "---:|" * (len(names) + 1)]
    reasons: dict[str, str] = {}
    for r in table:
        cells = []
        for n in names:
            cell = f"{r[n]:,}"
            if "precise" in r:
                cell += " / " + ("n/a" if r["precise"][n] is None else f"{r['precise'][n]:,}")
                reasons.update(r["precise_errors"])
            cells.append(cell)
        host = " / ".join(f"{r['host_gib'][n]:.1f}" for n in OFFLOADING) + " GiB"
        lines.append(f"| {r['model']} {r['method']} | {r['gpu_gib']} GiB | " + " | ".join(cells) + f" | {host} |")
    lines += [f"\nn/a ({n}): {why}" for n, why in reasons.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--precise", action="store_true", help="also search each length with precise mode (slow)")
    args = parser.parse_args()
    table = rows(precise=args.precise)
    print(json.dumps(table, indent=2) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
