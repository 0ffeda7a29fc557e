#!/usr/bin/env python3
"""The estimator against real training runs, on any CPU (issue 16's CI table).

Each case trains the demo model (``make-demo``: a 3.5M-parameter Llama, fp32) for a few packed
steps with the real trainer, which measures its peak live tensor bytes (trainer/tensor_memory.py),
and compares that with the planner's CPU-device prediction for the same setup: the analytic
estimate (what the Train page charts) and, with ``--precise``, precise mode. On the CPU there is
no CUDA context, workspace or allocator slack, so every byte compared is a tensor the estimator
models.

    python scripts/check_cpu_runs.py [--precise] [--json] [--steps 3]

Exits 1 when a case is off by more than ``--tolerance`` (5%).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MiB = 2**20

CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full, checkpointing on", {"method": "full"}),
    ("full, checkpointing off", {"method": "full", "grad_checkpointing": False}),
    ("LoRA, checkpointing on", {"method": "lora"}),
    ("LoRA, checkpointing off", {"method": "lora", "grad_checkpointing": False}),
    ("QLoRA, checkpointing on", {"method": "qlora"}),
    ("QLoRA, checkpointing off", {"method": "qlora", "grad_checkpointing": False}),
    ("full, accumulation 2", {"method": "full", "grad_checkpointing": False, "gradient_accumulation_steps": 2}),
    ("QLoRA bf16", {"method": "qlora", "precision": "bf16"}),
    ("QLoRA bf16, no fp32 upcast", {"method": "qlora", "precision": "bf16", "kbit_upcast": False}),
    ("LoRA bf16, chunked loss", {"method": "lora", "precision": "bf16", "loss": "chunked"}),
    ("LoRA bf16, 1 MiB loss chunks", {"method": "lora", "precision": "bf16", "loss": "chunked", "loss_chunk_mib": 1}),
    ("LoRA bf16, chunked-output loss", {"method": "lora", "precision": "bf16", "loss": "chunked-output"}),
    ("LoRA bf16", {"method": "lora", "precision": "bf16"}),
    ("LoRA, offloaded activations", {"method": "lora", "offload_activations": True}),
    ("DoRA", {"method": "lora", "use_dora": True}),
    ("AdaLoRA", {"method": "lora", "peft": "adalora"}),
    ("IA3 on 4 bits", {"method": "qlora", "peft": "ia3"}),
    ("prompt tuning", {"method": "lora", "peft": "prompt", "modules_to_save": []}),
    # eager attention: precise mode lacks the kernel sdpa takes for prefix tuning's mask
    ("prefix tuning, eager", {"method": "lora", "peft": "prefix", "modules_to_save": [], "grad_checkpointing": False,
                              "attention": "eager"}),
    ("full, optimizer in backward", {"method": "full", "optimizer_in_backward": True, "max_grad_norm": 0.0}),
)
"""Method x checkpointing, then one case per technique that changes which tensors exist (the
stacks' losses among them: Unsloth's chunk budget, torchtune's chunked output). The
demo's LoRA and QLoRA train the LM head in full (``modules_to_save``); full fine-tuning has none."""


@dataclass(frozen=True)
class Case:
    name: str
    measured: int
    """Peak live tensor bytes of the run (the end event's ``peak_alloc_bytes``)."""
    phase: str
    predicted: int
    """The planner's CPU-device estimate (the start event's ``predicted_peak_bytes``)."""
    precise: int | None = None
    """Precise mode's CPU-device prediction (``--precise``)."""

    @property
    def error(self) -> float:
        """predicted / measured - 1: positive when the plan asked for more than the run used."""
        return self.predicted / self.measured - 1

    @property
    def precise_error(self) -> float | None:
        return None if self.precise is None else self.precise / self.measured - 1


def run_case(demo: Path, work: Path, name: str, overrides: dict[str, Any], steps: int, precise: bool) -> Case:
    from trainer.run import main

    cfg = json.loads((demo / "run.json").read_text())
    cfg.update(max_steps=steps, save_steps=0, packing=True, output_dir=str(work / f"run-{len(list(work.iterdir()))}"))
    if overrides.get("method") == "full":
        cfg["modules_to_save"] = []
    cfg.update(overrides)
    path = work / f"{Path(cfg['output_dir']).name}.json"
    path.write_text(json.dumps(cfg))
    out = io.StringIO()
    code = main(str(path), None, stdin=io.StringIO(""), out=out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    end = next(e for e in events if e["event"] == "end")
    start = next(e for e in events if e["event"] == "start")
    if code != 0 or end["status"] != "completed":
        raise SystemExit(f"{name}: the run ended {end['status']} (exit {code})")
    return Case(name, end["peak_alloc_bytes"], end["peak_alloc_phase"], start["predicted_peak_bytes"],
                _precise(cfg, start["precision"]) if precise else None)


def _precise(cfg: dict[str, Any], precision: str) -> int:
    from planner.catalog import resolve_model
    from planner.simulate import simulate
    from trainer.config import TrainConfig, setup_of

    config = TrainConfig.from_dict(cfg)
    return simulate(resolve_model(config.model), setup_of(config, precision), device="cpu").peak_allocated_bytes


def table(cases: list[Case]) -> str:
    precise = any(c.precise is not None for c in cases)
    head = "| case | phase at the peak | measured MiB | estimate MiB | error |" + (
        " precise MiB | error |" if precise else "")
    rows = [head, "|---|---|---:|---:|---:|" + ("---:|---:|" if precise else "")]
    for c in cases:
        row = f"| {c.name} | {c.phase} | {c.measured / MiB:.2f} | {c.predicted / MiB:.2f} | {c.error:+.1%} |"
        if c.precise is not None and c.precise_error is not None:
            row += f" {c.precise / MiB:.2f} | {c.precise_error:+.1%} |"
        rows.append(row)
    worst = max(cases, key=lambda c: abs(c.error))
    rows.append(f"\n{len(cases)} runs: worst estimate error {worst.error:+.1%} ({worst.name})")
    return "\n".join(rows)


def main() -> int:
    import torch

    from trainer.demo import make_demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per case (3)")
    parser.add_argument("--precise", action="store_true", help="also compare precise mode's CPU prediction")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest |error| accepted (0.05)")
    parser.add_argument("--json", action="store_true", help="print the cases as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)  # bit-identical losses, and no oversubscription on a loaded machine
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_demo(work / "demo")
        (work / "runs").mkdir()
        cases = [run_case(work / "demo", work / "runs", name, overrides, args.steps, args.precise)
                 for name, overrides in CASES]
    if args.json:
        print(json.dumps([{f.name: getattr(c, f.name) for f in fields(c)} | {"error": c.error} for c in cases],
                         indent=1))
    else:
        print(table(cases))
    return 1 if any(abs(c.error) > args.tolerance for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
