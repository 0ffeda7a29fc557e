#!/usr/bin/env python3
"""Analytic estimator vs precise mode (simulated step) on a sweep; prints the divergence table.

    python scripts/compare_estimators.py [--markdown] [--model ID ...] [--techniques]

7 models (dense, GQA, large vocabulary, MoE) x full/LoRA/QLoRA x 512/2048/8192 tokens x
checkpointing on/off. Points precise mode cannot simulate are listed with the reason.

Then the memory-saving techniques (issue 15; ``--techniques``: that table only): 5 models (large
vocabulary, tied embeddings, Gemma 2's logit softcap, MoE) x LoRA/QLoRA (and full fine-tuning
for the chunked loss, offloading and the optimizer step in backward) x 2048/8192/32768 tokens x
the chunked loss, QLoRA without the fp32 upcast, activation offloading, the optimizer step in
backward and all that apply together, checkpointing on: peak allocated and host RAM (offloaded
activations), analytic vs simulated.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup
from planner.simulate import simulate

MODELS = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B", "google/gemma-2-9b",
          "mistralai/Mistral-7B-v0.1", "Qwen/Qwen2.5-0.5B", "mistralai/Mixtral-8x7B-v0.1")
METHODS = ("full", "lora", "qlora")
SEQS = (512, 2048, 8192)

TECHNIQUE_MODELS = ("meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen2.5-0.5B",
                    "google/gemma-2-9b", "mistralai/Mixtral-8x7B-v0.1")
TECHNIQUE_SEQS = (2048, 8192, 32768)
TECHNIQUES = {
    "chunked": {"loss": "chunked"},
    "no-upcast": {"kbit_prepare": False},
    "offload": {"offload_activations": True},
    "in-backward": {"optimizer_in_backward": True},
}
TECHNIQUE_METHODS = {"full": ("chunked", "offload", "in-backward"), "lora": ("chunked", "offload"),
                     "qlora": ("chunked", "no-upcast", "offload")}
"""The techniques that apply to each method; ``all`` is every one of them together."""
BOUND = 0.05
"""The divergence the technique sweep holds itself to."""
GIB = 2**30


def attention_for(model, seq: int) -> str:
    """sdpa, as the trainer defaults to, unless the model needs flash-attn: Gemma 2's softcap has
    no sdpa path in transformers, and sdpa masks a sliding window beyond it explicitly."""
    window = model.config.get("sliding_window")
    if model.arch.model_type == "gemma2" or (isinstance(window, int) and seq > window):
        return "flash_attention_2"
    return "sdpa"


def technique_changes(method: str, technique: str) -> dict:
    """The TrainSetup fields ``technique`` (a key of TECHNIQUES, or ``all``) sets for ``method``."""
    names = TECHNIQUE_METHODS[method] if technique == "all" else (technique,)
    if any(n not in TECHNIQUE_METHODS[method] for n in names):
        raise ValueError(f"{technique} does not apply to {method}")
    return {k: v for n in names for k, v in TECHNIQUES[n].items()}


def technique_points(models=TECHNIQUE_MODELS) -> list[tuple[str, str, int, str]]:
    """(model, method, seq, technique) of the technique sweep, in table order."""
    return [(m, method, seq, t) for m in models for method, names in TECHNIQUE_METHODS.items()
            for seq in TECHNIQUE_SEQS for t in (*names, "all")]


@dataclass(frozen=True)
class Point:
    """One setup, analytic vs simulated; the simulated fields are None when precise mode cannot
    simulate it (``reason`` says why)."""

    model: str
    setup: TrainSetup
    analytic: int
    analytic_host: int
    simulated: int | None = None
    simulated_host: int | None = None
    reason: str = ""

    @property
    def divergence(self) -> float | None:
        """analytic / simulated - 1 on peak allocated bytes."""
        return None if self.simulated is None else self.analytic / self.simulated - 1


def compare(model_id: str, setup: TrainSetup) -> Point:
    model = resolve_model(model_id)
    est = estimate(model, setup)
    try:
        sim = simulate(model, setup)
    except PlannerError as exc:
        return Point(model_id, setup, est.peak_allocated_bytes, est.host_bytes, reason=str(exc))
    return Point(model_id, setup, est.peak_allocated_bytes, est.host_bytes, sim.peak_allocated_bytes, sim.host_bytes)


def technique_setup(model_id: str, method: str, seq: int, technique: str) -> TrainSetup:
    return TrainSetup(method=method, seq_len=seq, grad_checkpointing=True,
                      attention=attention_for(resolve_model(model_id), seq), **technique_changes(method, technique))


def _short(reason: str) -> str:
    return "not simulated: " + reason.split(":")[1].split("(")[0].strip() if ":" in reason else reason


def _print_row(row: tuple[str, ...], markdown: bool, plain: str) -> None:
    print("| " + " | ".join(row) + " |" if markdown else plain.format(*row))


def _summary(errors: list[float], skipped: int, bound: float) -> str:
    over = sum(e > bound for e in errors)
    return (f"{len(errors)} points simulated ({skipped} not): median |divergence| "
            f"{statistics.median(errors):.1%}, max {max(errors):.1%}, {over} over {bound:.0%}")


def sweep(models, markdown: bool) -> None:
    """The first table: every model x method x length x checkpointing, no technique."""
    errors, skipped = [], 0
    if markdown:
        print("| model | method | seq | ckpt | attention | simulated GiB | analytic GiB | analytic vs simulated |")
        print("|---|---|---:|---|---|---:|---:|---:|")
    for model_id in models:
        model = resolve_model(model_id)
        for method in METHODS:
            for seq in SEQS:
                for ckpt in (True, False):
                    attention = attention_for(model, seq)
                    p = compare(model_id, TrainSetup(method=method, seq_len=seq, grad_checkpointing=ckpt,
                                                     attention=attention))
                    if p.divergence is None:
                        skipped += 1
                        cells = ("-", _short(p.reason))
                    else:
                        errors.append(abs(p.divergence))
                        cells = (f"{p.simulated / GIB:.2f}", f"{p.divergence:+.1%}")
                    row = (model_id, method, str(seq), "on" if ckpt else "off", attention, cells[0],
                           f"{p.analytic / GIB:.2f}", cells[1])
                    _print_row(row, markdown, "{:30} {:5} {:>5} {:3} {:17} {:>8} {:>8}  {}")
    if errors:
        print("\n" + _summary(errors, skipped, 0.10))


def technique_sweep(models, markdown: bool) -> list[Point]:
    """The second table: the memory-saving techniques, checkpointing on. Returns its points."""
    points, errors, skipped = [], [], 0
    if markdown:
        print("| model | method | seq | technique | attention | simulated GiB | analytic GiB | analytic vs simulated "
              "| host GiB simulated | host GiB analytic |")
        print("|---|---|---:|---|---|---:|---:|---:|---:|---:|")
    else:
        print(f"{'model':30} {'method':6} {'seq':>5} {'technique':9} {'attention':17} {'sim GiB':>8} "
              f"{'est GiB':>8} {'vs sim':>7} {'host sim':>8} {'host est':>8}")
    for model_id, method, seq, technique in technique_points(models):
        p = compare(model_id, technique_setup(model_id, method, seq, technique))
        points.append(p)
        if p.divergence is None:
            skipped += 1
            cells = ("-", _short(p.reason), "-")
        else:
            errors.append(abs(p.divergence))
            cells = (f"{p.simulated / GIB:.2f}", f"{p.divergence:+.1%}", f"{p.simulated_host / GIB:.2f}")
        row = (model_id, method, str(seq), technique, p.setup.attention, cells[0], f"{p.analytic / GIB:.2f}",
               cells[1], cells[2], f"{p.analytic_host / GIB:.2f}")
        _print_row(row, markdown, "{:30} {:6} {:>5} {:9} {:17} {:>8} {:>8} {:>7} {:>8} {:>8}")
    if errors:
        print("\n" + _summary(errors, skipped, BOUND))
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--model", nargs="+", help="only these catalog ids (in both tables)")
    ap.add_argument("--techniques", action="store_true", help="only the memory-saving techniques' table")
    args = ap.parse_args(argv)
    if not args.techniques:
        sweep(args.model or MODELS, args.markdown)
        print()
    technique_sweep(args.model or TECHNIQUE_MODELS, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
