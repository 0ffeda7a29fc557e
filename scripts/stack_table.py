#!/usr/bin/env python3
"""What planning for another training stack changes (issue 17): each preset's knobs, and its
shift of Llama-3.1-8B's GPU memory at 2,048 tokens against this app's own stack.

    python scripts/stack_table.py [--precise]      # the shift table (GiB of device memory used)
    python scripts/stack_table.py --knobs          # every knob each preset sets, with its source

``--precise`` adds peak allocated, the estimate's and precise mode's (about 15 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.catalog import resolve_model  # noqa: E402
from planner.memory import estimate  # noqa: E402
from planner.options import STACKS, TrainSetup  # noqa: E402
from planner.stacks import load_stack  # noqa: E402
from planner.units import GiB  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B"
METHODS = ("lora", "qlora", "full")


def shift_table(precise: bool) -> str:
    model = resolve_model(MODEL)
    head = "| stack | " + " | ".join(f"{m} GiB" for m in ("LoRA", "QLoRA", "full")) + " |"
    rows = [head, "|---|" + "---:|" * len(METHODS)]
    # device used (what nvidia-smi shows): a paged optimizer's state is there, though outside
    # PyTorch's allocated count
    ours = {m: estimate(model, TrainSetup(method=m)).device_used_bytes for m in METHODS}
    for name in STACKS:
        cells = []
        for method in METHODS:
            setup = load_stack(name).apply(TrainSetup(method=method))
            peak = estimate(model, setup).device_used_bytes
            cell = f"{peak / GiB:.1f}" + ("" if name == "hf" else f" ({peak / ours[method] - 1:+.0%})")
            if precise:  # allocated, where the two model the same thing (slack they model apart)
                from planner.simulate import simulate

                est, sim = estimate(model, setup).peak_allocated_bytes, simulate(model, setup).peak_allocated_bytes
                cell += f"; allocated {est / GiB:.1f} / {sim / GiB:.1f}"
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def knob_table() -> str:
    rows = ["| stack | method | knob | value | source |", "|---|---|---|---|---|"]
    for name in STACKS[1:]:
        stack = load_stack(name)
        blocks = [("all", stack.settings), *stack.methods.items()]
        for method, block in blocks:
            for knob, k in block.items():
                value = {True: "on", False: "off"}.get(k.value, k.value) if isinstance(k.value, bool) else k.value
                rows.append(f"| {name} | {method} | {knob} | {value} | {k.source} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precise", action="store_true", help="precise mode's figure beside each estimate")
    parser.add_argument("--knobs", action="store_true", help="every knob each preset sets, with its source")
    args = parser.parse_args()
    print(knob_table() if args.knobs else shift_table(args.precise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
