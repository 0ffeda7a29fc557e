#!/usr/bin/env python3
"""Run every published measurement through the estimator and print measured vs predicted.

    python scripts/validate_estimator.py [--csv PATH] [--stacks-csv PATH] [--markdown]

Rows measured on another training stack (``framework``: torchtune, axolotl, litgpt, unsloth;
resources/reference/stack_measurements.csv) are planned with that stack's preset
(planner/stacks.py) for every setting the row leaves out, and summarised per stack.

Each row is compared on the quantity it measured: ``allocated`` (torch max_memory_allocated),
``reserved`` (max_memory_reserved), ``device`` (nvidia-smi) or ``weights_only`` (the loaded
base model). Rows of ``unknown`` kind are compared as ``device``. A bare "G" is read as GB:
the one source that writes it (the Qwen README) titles its table "memory (GB)".
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from planner.catalog import catalog, resolve_model
from planner.memory import estimate
from planner.options import STACKS, TrainSetup
from planner.stacks import load_stack

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "resources" / "reference" / "measurements.csv"
STACKS_CSV = DEFAULT_CSV.with_name("stack_measurements.csv")
SAME_CONFIG = {
    "unsloth/llama-3-8b-bnb-4bit": "meta-llama/Meta-Llama-3-8B",
    "unsloth/llama-3-8b-Instruct-bnb-4bit": "meta-llama/Meta-Llama-3-8B",
    "unsloth/Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "unsloth/Llama-3.2-1B-Instruct": "meta-llama/Llama-3.2-1B",
    "unsloth/Llama-3.2-3B-Instruct": "meta-llama/Llama-3.2-3B",
    "unsloth/Llama-3.3-70B-Instruct": "meta-llama/Llama-3.3-70B-Instruct",
    "unsloth/Qwen2.5-7B": "Qwen/Qwen2.5-7B",
    "unsloth/tinyllama-bnb-4bit": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
}
"""Repositories that re-publish a catalog model (the same architecture; instruct tunes and
pre-quantized copies): rows name the repository they loaded."""
SPELLINGS = {"precision": {"bf16-true": "bf16"}, "attention": {"xformers": "sdpa"}}
"""Other stacks' words for a setting the estimator names otherwise: litgpt's ``bf16-true`` is pure
bf16; xformers' memory-efficient attention, like sdpa's, keeps no (s x s) scores."""
STATED = {"precision": "precision", "adapter_dtype": "adapter_dtype", "optimizer": "optimizer",
          "grad_checkpointing": "grad_checkpointing", "double_quant": "double_quant", "loss": "loss"}
"""Row columns that are stack knobs (column -> TrainSetup field): stated, they are the run's own."""

# What a source's own code did where its row leaves a setting unstated (read from the code at the
# commit that produced the numbers). Stated row values always win; these only fill the gaps.
SOURCE_CODE = {
    # AnswerDotAI/fsdp_qlora train.py @50efa1e: whole model cast to bf16 (adapters included), no
    # prepare_model_for_kbit_training (embeddings and LM head stay bf16).
    "fsdp_qlora": {"adapter_dtype": "bf16", "kbit_prepare": False},
    # modelscope/ms-swift @97e4d198b: no prepare_model_for_kbit_training; memory is
    # torch.cuda.max_memory_reserved over the whole run (Seq2SeqTrainer.train); gradient
    # accumulation defaults to ceil(16 / batch_size / world_size) (SftArguments.__post_init__).
    "ms-swift": {"kbit_prepare": False, "kind": "reserved", "global_batch": 16},
    # QwenLM/Qwen README, "Profiling of Memory and Speed": batch size 1, gradient accumulation 8.
    "QwenLM/Qwen": {"gradient_accumulation_steps": 8},
}


def _source_code(row: dict[str, str]) -> dict:
    for key, known in SOURCE_CODE.items():
        if key in row["source"]:
            return known
    return {}


def _family(row: dict[str, str]) -> str:
    """The source a row comes from, however its citation is abbreviated."""
    return next((key for key in SOURCE_CODE if key in row["source"]), row["source"].split()[0])

UNITS = {"GB": 10**9, "GiB": 2**30, "G": 10**9, "MB": 10**6, "MiB": 2**20}


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    measured: float
    predicted: float
    gpus: int = 1
    """GPUs of the run; multi-GPU rows are per GPU."""
    stack: str = "hf"
    """The training stack that measured it (planner/stacks.py)."""

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured


def setup_of(r: dict[str, str]) -> TrainSetup:
    stack = r["framework"] if r["framework"] in STACKS else "hf"
    # another stack's preset fills what the row leaves out, not the HF sources' code below
    code = _source_code(r) if stack == "hf" else {}

    def opt(key: str, default: str) -> str:
        value = (r.get(key) or "").strip() or code.get(key, default)  # "loss" is stack_measurements.csv's only
        return SPELLINGS.get(key, {}).get(value, value)

    method = r["method"]
    targets = opt("lora_targets", "all-linear")
    batch, gpus = int(opt("batch_size", "1")), int(opt("num_gpus", "1"))
    accumulation = code.get("gradient_accumulation_steps", math.ceil(code.get("global_batch", 1) / batch / gpus))
    setup = TrainSetup(
        method=method,
        quant=(opt("quant", "nf4") if method == "qlora" else None),
        double_quant=opt("double_quant", "on") == "on",
        precision=opt("precision", "bf16"),
        adapter_dtype=opt("adapter_dtype", "fp32"),
        optimizer=opt("optimizer", "adamw_torch"),
        batch_size=batch,
        gradient_accumulation_steps=accumulation,
        seq_len=int(opt("seq_len", "2048")),
        grad_checkpointing=opt("grad_checkpointing", "on") == "on",
        attention=opt("attention", "sdpa"),
        lora_r=int(opt("lora_r", "16")),
        lora_targets=tuple(targets.split(",")),
        modules_to_save=tuple(m for m in r["modules_to_save"].split(",") if m),
        num_gpus=gpus,
        sharding=opt("sharding", "none"),
        # "activations": Unsloth's checkpointing, each layer's input offloaded to host RAM
        offload="none" if r["offload"] == "activations" else opt("offload", "none"),
        offload_activations=r["offload"] == "activations",
        kbit_prepare=code.get("kbit_prepare", r["kind"] != "weights_only"),
        loss=opt("loss", "standard"),
        explicit=frozenset(field for column, field in STATED.items() if (r.get(column) or "").strip())
        | ({"offload_activations"} if r["offload"].strip() else set()),
    )
    return load_stack(stack).apply(setup) if stack != "hf" else setup


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    lines = [line for line in csv_path.read_text().splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


@dataclass(frozen=True)
class Slope:
    """Memory one source's own rows add per extra token, beside the estimator's for that setup."""

    key: str
    source: str
    seq_from: int
    seq_to: int
    measured: float  # bytes per token
    predicted: float


def cross_source_slopes(raw: list[dict[str, str]]) -> list[Slope]:
    """Where two sources measured the same model and method at the same lengths, compare the
    memory each adds per token. Only measured values enter ``measured``, so a disagreement here
    is between the sources themselves, and no single estimator can fit both."""
    groups: dict[tuple, dict[str, dict[int, dict[str, str]]]] = {}
    for r in raw:
        if r["seq_len"] and r["batch_size"] == "1" and r["num_gpus"] == "1":
            key = (r["model"], r["method"], r["grad_checkpointing"], r["attention"])
            groups.setdefault(key, {}).setdefault(_family(r), {})[int(r["seq_len"])] = r
    slopes = []
    for key, by_source in groups.items():
        for source, by_seq in by_source.items():
            elsewhere = {seq for other, seqs in by_source.items() if other != source for seq in seqs}
            shared = sorted(set(by_seq) & elsewhere)
            for lo, hi in zip(shared, shared[1:]):
                a, b = by_seq[lo], by_seq[hi]
                measured = [float(x["value"]) * UNITS[x["unit"]] for x in (a, b)]
                predicted = [estimate(resolve_model(x["model"]), setup_of(x)).peak_allocated_bytes for x in (a, b)]
                slopes.append(Slope(f"{key[0]} {key[1]}", source, lo, hi,
                                    (measured[1] - measured[0]) / (hi - lo),
                                    (predicted[1] - predicted[0]) / (hi - lo)))
    return sorted(slopes, key=lambda s: (s.key, s.seq_from, s.source))


def model_of(r: dict[str, str]) -> str:
    return SAME_CONFIG.get(r["model"], r["model"])


def evaluate(raw: list[dict[str, str]]) -> list[Row]:
    rows = []
    for r in raw:
        est = estimate(resolve_model(model_of(r)), setup_of(r))
        b = est.breakdown
        predicted = {
            "allocated": est.peak_allocated_bytes,
            "reserved": est.peak_reserved_bytes,
            "device": est.device_used_bytes,
            "unknown": est.device_used_bytes,
            "weights_only": b.weights + b.quant_state,
        }[_source_code(r).get("kind", r["kind"]) if r["kind"] == "unknown" else r["kind"]]
        rows.append(Row(r["id"], r["kind"], float(r["value"]) * UNITS[r["unit"]], predicted,
                        int(r["num_gpus"] or 1), r["framework"] if r["framework"] in STACKS else "hf"))
    return rows


def summary(rows: list[Row]) -> tuple[float, float]:
    errs = [abs(r.error) for r in rows]
    return statistics.median(errs), max(errs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--stacks-csv", type=Path, default=STACKS_CSV,
                    help="rows measured on other stacks (skipped when the file does not exist)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table for the README")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"error: {args.csv} not found; pass --csv PATH to measurements.csv", file=sys.stderr)
        return 2
    raw = read_rows(args.csv)
    stacked = read_rows(args.stacks_csv) if args.stacks_csv.is_file() else []
    known = set(catalog())
    unknown = sorted({r["model"] for r in stacked if model_of(r) not in known})
    stacked = [r for r in stacked if model_of(r) in known]
    rows = evaluate(raw + stacked)
    gib = 2**30
    if args.markdown:
        print("| row | kind | measured GiB | predicted GiB | error |\n|---|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r.id} | {r.kind} | {r.measured / gib:.2f} | {r.predicted / gib:.2f} | {r.error:+.1%} |")
    else:
        print(f"{'row':32} {'kind':12} {'measured':>10} {'predicted':>10} {'error':>8}")
        for r in rows:
            print(f"{r.id:32} {r.kind:12} {r.measured / gib:9.2f}G {r.predicted / gib:9.2f}G {r.error:+8.1%}")
    item = "- " if args.markdown else ""  # Markdown would run the summary lines into one
    ours = [r for r in rows if r.stack == "hf"]
    med, worst = summary(ours)
    print(f"\n{item}{len(ours)} rows: median |error| {med:.1%}, max |error| {worst:.1%}")
    for stack in STACKS[1:]:
        theirs = [r for r in rows if r.stack == stack]
        if theirs:
            med, worst = summary(theirs)
            print(f"{item}{stack}: {len(theirs)} rows, its preset for what they leave out: median |error| {med:.1%}, "
                  f"max |error| {worst:.1%}")
    if unknown:
        print(f"{item}not checked ({len(unknown)} models outside the catalog): {', '.join(unknown)}")
    multi = [r for r in ours if r.gpus > 1]
    if multi:
        med, worst = summary(multi)
        print(f"{item}{len(multi)} multi-GPU rows (per GPU): median |error| {med:.1%}, max |error| {worst:.1%}")
    slopes = cross_source_slopes(raw)
    if slopes:
        print("\nSame model and method measured by two sources: memory added per token (MB/token)")
        print(f"{'model, method':24} {'tokens':>11}  {'source':12} {'measured':>9} {'estimator':>9}")
        for s in slopes:
            print(f"{s.key:24} {s.seq_from:>5}-{s.seq_to:<5}  {s.source:12} "
                  f"{s.measured / 1e6:9.2f} {s.predicted / 1e6:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
