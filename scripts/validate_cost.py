#!/usr/bin/env python3
"""Predicted vs published training throughput (tokens/s), row by row.

    python scripts/validate_cost.py [--csv PATH] [--fit] [--markdown] [--summary] [--check]

Then the leave-one-out errors by GPU generation, method, model size and tokens per optimizer step.

Settings (batch, sequence, checkpointing, rank, GPUs, FSDP, compile, FlashAttention-2) are read
from each row's own text; "same" repeats the row above; torchtune's rows take its preset for the
rest. ``--fit`` prints the one matmul utilization the rows imply (the median of the utilizations
that reproduce each row), for planner/calibration.py. Besides the in-sample error, each row is
also predicted with the utilization fitted on the *other* rows only (leave-one-out), which is
the honest measure for a table this small. ``--check`` predicts rows reserved for independent
checking (resources/reference/independent_throughput.csv) with the calibrated constant and fits
nothing on them.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from planner import calibration
from planner.catalog import resolve_model
from planner.catalog.gpus import GpuSpec, find_gpu
from planner.cost import fmt_shares, run_cost
from planner.options import TrainSetup
from planner.stacks import load_stack

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "resources" / "reference" / "throughput.csv"


@dataclass(frozen=True)
class Row:
    model: str
    gpu: GpuSpec
    setup: TrainSetup
    measured: float
    setting: str


def _setup(method: str, setting: str, gpus: int, source: str) -> TrainSetup:
    batch = int(m.group(1)) if (m := re.search(r"\bbs(\d+)", setting)) else 1
    numbers = [int(x) for x in re.findall(r"(?<![a-zA-Z])(\d{3,5})\b", setting)]
    seq = numbers[-1] if numbers else 2048
    rank = int(m.group(1)) if (m := re.search(r"\br(\d+)\b", setting)) else 8
    # torchtune's table names checkpointing where it was on; LLaMA-Factory and Qwen's scripts
    # turn it on by default
    if "no checkpointing" in setting:
        ckpt = False
    else:
        ckpt = "checkpointing" in setting or "torchtune" not in source
    sharding = "fsdp" if "FSDP" in setting else ("ddp" if gpus > 1 else "none")
    accumulation = int(m.group(1)) if (m := re.search(r"\bGA(\d+)", setting)) else 1
    stated = {"method": method, "quant": "nf4" if method == "qlora" else None, "batch_size": batch, "seq_len": seq,
              "grad_checkpointing": ckpt, "lora_r": rank, "num_gpus": gpus, "sharding": sharding,
              "gradient_accumulation_steps": accumulation,
              "kernels": "compile" if "compile" in setting else "eager",
              "attention": "flash_attention_2" if re.search(r"\bFA2\b|FlashAttention-2", setting) else "sdpa"}
    if m := re.search(r"\bpeft (\w+)", setting):
        stated["peft"] = m.group(1)
    if m := re.search(r"\bvirtual (\d+)", setting):
        stated["virtual_tokens"] = int(m.group(1))
    if m := re.search(r"\btargets ([\w,]+)", setting):
        stated["lora_targets"] = tuple(m.group(1).split(","))
    if "DoRA" in setting:
        stated["use_dora"] = True
    if m := re.search(r"\bdropout (0\.\d+)", setting):
        stated["lora_dropout"] = float(m.group(1))
    # torchtune's rows ran its recipes: its preset fills what the row does not say (bf16 adapters,
    # no dropout, its chunked loss)
    return load_stack("torchtune").apply(TrainSetup(), **stated) if "torchtune" in source else TrainSetup(**stated)


def load_rows(path: Path) -> list[Row]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    rows, previous = [], ""
    for r in csv.DictReader(lines):
        setting = previous if r["setting"].strip().startswith("same") else r["setting"]
        extra = r["setting"].strip()[4:] if r["setting"].strip().startswith("same") else ""
        previous = setting
        count, name = r["gpus"].split("x ", 1)
        gpu = find_gpu(name.strip())
        setup = _setup(r["method"], f"{setting} {extra}", int(count), r["source"])
        rows.append(Row(r["model"], gpu, setup, float(r["tokens_per_s"]), f"{setting} {extra}".strip()))
    return rows


def predict(row: Row, utilization: float) -> float:
    return run_cost(resolve_model(row.model).arch, row.setup, row.gpu, utilization=utilization).tokens_per_second


def implied_utilization(row: Row) -> float:
    """The utilization at which the model reproduces this row exactly (bisection: tps rises with it)."""
    lo, hi = 1e-4, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if predict(row, mid) < row.measured:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit(implied: list[float]) -> float:
    """The one matmul utilization: the median of the rows' implied ones."""
    return round(statistics.median(implied), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--summary", action="store_true", help="only the medians and the breakdown, not every row")
    ap.add_argument("--check", action="store_true",
                    help="rows reserved for checking: predict them with the calibrated constant, fit nothing")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"error: {args.csv} not found; pass --csv PATH to throughput.csv", file=sys.stderr)
        return 2
    rows = load_rows(args.csv)
    if args.check:
        return check(rows)
    implied = [implied_utilization(row) for row in rows]
    if args.fit:
        print(f"MATMUL_UTILIZATION = {fit(implied)}")
        return 0
    errors, loo_errors = [], []
    if args.markdown and not args.summary:
        print("| model | method | GPU | setting | published tok/s | predicted | error | leave-one-out |")
        print("|---|---|---|---|---:|---:|---:|---:|")
    for i, row in enumerate(rows):
        got = predict(row, calibration.MATMUL_UTILIZATION)
        loo = predict(row, fit(implied[:i] + implied[i + 1:]))
        err, loo_err = got / row.measured - 1, loo / row.measured - 1
        errors.append(abs(err))
        loo_errors.append(abs(loo_err))
        gpus = f"{row.setup.num_gpus}x {row.gpu.name}"
        if args.summary:
            continue
        if args.markdown:
            print(f"| {row.model} | {row.setup.method} | {gpus} | {row.setting} | {row.measured:.0f} | {got:.0f} | "
                  f"{err:+.1%} | {loo_err:+.1%} |")
        else:
            print(f"{row.model:34} {row.setup.method:5} {gpus:16} {row.measured:7.0f} {got:7.0f} {err:+7.1%} "
                  f"(leave-one-out {loo_err:+.1%})")
    if not args.summary:
        print()
    print(f"{len(rows)} rows: median |error| {statistics.median(errors):.1%} (max {max(errors):.1%}); "
          f"leave-one-out median {statistics.median(loo_errors):.1%} (max {max(loo_errors):.1%})")
    print(groups_table(rows, loo_errors, args.markdown))
    return 0


def check(rows: list[Row]) -> int:
    """Independent rows (never fitted): each predicted with the calibrated utilization, and where
    its step's time goes."""
    errors = []
    print("| model | method | GPU | setting | published tok/s | predicted | error | the step's time |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for row in rows:
        cost = run_cost(resolve_model(row.model).arch, row.setup, row.gpu)
        err = cost.tokens_per_second / row.measured - 1
        errors.append(abs(err))
        shares = fmt_shares(cost.step.shares())
        print(f"| {row.model} | {row.setup.method} | {row.setup.num_gpus}x {row.gpu.name} | {row.setting} | "
              f"{row.measured:.0f} | {cost.tokens_per_second:.0f} | {err:+.1%} | {shares} |")
    print(f"\n{len(rows)} rows, nothing fitted on them: median |error| {statistics.median(errors):.1%} "
          f"(max {max(errors):.1%})")
    return 0


def _size(row: Row) -> str:
    billions = resolve_model(row.model).total_params / 1e9
    return "under 5B" if billions < 5 else "5B to 15B" if billions < 15 else "15B and over"


def _step_tokens(row: Row) -> str:
    tokens = row.setup.batch_size * row.setup.seq_len * row.setup.gradient_accumulation_steps
    return "under 2,048" if tokens < 2048 else "2,048 to 8,191" if tokens < 8192 else "8,192 and over"


GROUPS = (("GPU generation", lambda r: r.gpu.generation), ("method", lambda r: r.setup.method),
          ("model size", _size), ("tokens per optimizer step", _step_tokens))
"""How the leave-one-out errors are broken down (issue 19): where the model misses in a pattern."""


def groups_table(rows: list[Row], loo_errors: list[float], markdown: bool) -> str:
    """Median and worst leave-one-out |error| per value of each grouping."""
    lines = ["\n| grouping | value | rows | median | worst |", "|---|---|---:|---:|---:|"] if markdown else [""]
    for name, key in GROUPS:
        values: dict[str, list[float]] = {}
        for row, err in zip(rows, loo_errors):
            values.setdefault(key(row), []).append(err)
        for value, errs in sorted(values.items()):
            median, worst = statistics.median(errs), max(errs)
            lines.append(f"| {name} | {value} | {len(errs)} | {median:.1%} | {worst:.1%} |" if markdown else
                         f"{name:26} {value:16} {len(errs):3} rows  leave-one-out median {median:6.1%}  "
                         f"worst {worst:6.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
