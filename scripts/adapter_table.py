#!/usr/bin/env python3
"""The adapters side by side (issue 18): Llama-3.1-8B at 2,048 tokens, each peft method on a
16-bit and a 4-bit base, its GPU memory (what nvidia-smi shows), what it trains, and the time
model's tokens/s on an RTX 4090 and an A100, against LoRA's.

    python scripts/adapter_table.py [--precise]     # --precise: peak allocated, estimate / precise mode

Prefix tuning runs without gradient checkpointing (transformers 5 drops its keys inside
checkpointed layers); ``--precise`` runs it with flash attention, whose kernel the meta device has
for its mask.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.catalog import resolve_model  # noqa: E402
from planner.catalog.gpus import find_gpu  # noqa: E402
from planner.cost import run_cost  # noqa: E402
from planner.memory import estimate  # noqa: E402
from planner.options import TrainSetup  # noqa: E402
from planner.units import GiB, fmt_count  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B"
GPUS = ("RTX 4090", "A100 80GB")
ADAPTERS = (
    ("LoRA r=16", dict(peft="lora")),
    ("DoRA r=16", dict(peft="lora", use_dora=True)),
    ("AdaLoRA r=24->16", dict(peft="adalora")),
    ("IA3", dict(peft="ia3")),
    ("prompt tuning, 20 tokens", dict(peft="prompt")),
    ("prefix tuning, 20 tokens (no checkpointing)", dict(peft="prefix", grad_checkpointing=False)),
)


def table(precise: bool) -> str:
    model = resolve_model(MODEL)
    gpus = [find_gpu(name) for name in GPUS]
    last = " | allocated est / precise GiB |" if precise else " |"
    head = ("| adapter | trained | 16-bit base GiB | 4-bit base GiB | "
            + " | ".join(f"tokens/s {g.name}" for g in gpus) + last)
    rows = [head, "|---|---:|---:|---:|" + "---:|" * len(gpus) + ("---:|" if precise else "")]
    lora = TrainSetup()
    base_speed = [run_cost(model.arch, lora, g).tokens_per_second for g in gpus]
    base_used = estimate(model, lora).device_used_bytes
    for name, change in ADAPTERS:
        setup = replace(lora, **change)
        e16, e4 = estimate(model, setup), estimate(model, replace(setup, method="qlora", quant="nf4"))
        shift = "" if setup == lora else f" ({e16.device_used_bytes / base_used - 1:+.0%})"
        cells = [fmt_count(e16.params_trainable), f"{e16.device_used_bytes / GiB:.1f}{shift}",
                 f"{e4.device_used_bytes / GiB:.1f}"]
        for g, ref in zip(gpus, base_speed):
            speed = run_cost(model.arch, setup, g).tokens_per_second
            cells.append(f"{speed:,.0f}" + ("" if setup == lora else f" ({speed / ref - 1:+.0%})"))
        if precise:
            from planner.simulate import simulate

            sim_setup = replace(setup, attention="flash_attention_2") if setup.peft == "prefix" else setup
            est, sim = estimate(model, sim_setup), simulate(model, sim_setup)
            cells.append(f"{est.peak_allocated_bytes / GiB:.2f} / {sim.peak_allocated_bytes / GiB:.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precise", action="store_true", help="precise mode's peak allocated beside the estimate")
    print(table(parser.parse_args().precise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
