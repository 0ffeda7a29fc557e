"""``python -m planner``: the command-line front end (DESIGN.md, "CLI contract").

Every command has ``--json``. Bad input exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from planner.errors import PlannerError
from planner.loss import LOSSES
from planner.options import (
    ADAPTER_DTYPES,
    ATTENTIONS,
    METHODS,
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    SHARDINGS,
    TrainSetup,
    check_bound,
)
from planner.units import GiB, fmt_count


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (its default prints the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlannerError(f"{message}; see `python -m {self.prog} --help`")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _alts(values: Sequence[str]) -> str:
    return "{" + ",".join(values) + "}"


def _finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity replaced by null. The options' bounds keep every figure
    finite; this is the last guard, because ``json.dumps`` would print ``Infinity``, which no
    strict JSON parser reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json(doc: Any) -> None:
    """Every ``--json`` output: strict JSON (RFC 8259), no NaN or Infinity."""
    print(json.dumps(_finite(doc), indent=2, allow_nan=False))


def _add_options(p: argparse.ArgumentParser, with_model: bool = True) -> None:
    d = TrainSetup()
    if with_model:  # `table` has fixed models and rows that set method, quant and precision
        p.add_argument("--model", required=True,
                       help="catalog id (e.g. meta-llama/Llama-2-7b-hf), a config.json, or a model folder")
        p.add_argument("--method", default=None, metavar=_alts(METHODS), help=f"({d.method})")
        p.add_argument("--quant", default=None, metavar="{nf4,fp4,int8}", help="QLoRA base format (nf4)")
        p.add_argument("--precision", default=d.precision, metavar=_alts(PRECISIONS))
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=d.double_quant)
    p.add_argument("--kbit-upcast", action=argparse.BooleanOptionalAction, default=d.kbit_prepare,
                   help="QLoRA: embeddings, LM head and norms in fp32 (prepare_model_for_kbit_training; default) "
                        "or, with --no-kbit-upcast, in the load dtype as the QLoRA paper's script did")
    p.add_argument("--adapter-dtype", default=d.adapter_dtype, metavar=_alts(ADAPTER_DTYPES))
    p.add_argument("--optimizer", default=d.optimizer, metavar=_alts(OPTIMIZERS))
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="micro-batch per GPU (1)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per sample (2048)")
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=d.grad_checkpointing)
    p.add_argument("--attention", default=d.attention, metavar=_alts(ATTENTIONS))
    p.add_argument("--loss", default=d.loss, metavar=_alts(LOSSES),
                   help="standard: the whole logits at once; chunked: LM head and loss chunk by chunk")
    p.add_argument("--optimizer-in-backward", action=argparse.BooleanOptionalAction, default=d.optimizer_in_backward,
                   help="full fine-tuning: update each parameter as soon as its gradient exists, then free it")
    p.add_argument("--offload-activations", action=argparse.BooleanOptionalAction, default=d.offload_activations,
                   help="with checkpointing: each layer's saved input in host RAM, not on the GPU")
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--lora-targets", type=_csv, default=d.lora_targets, help="all-linear, or e.g. q_proj,v_proj")
    p.add_argument("--modules-to-save", type=_csv, default=(), help="e.g. embed_tokens,lm_head")
    p.add_argument("--num-gpus", type=int, default=d.num_gpus)
    p.add_argument("--sharding", default=d.sharding, metavar=_alts(SHARDINGS))
    p.add_argument("--offload", default=d.offload, metavar=_alts(OFFLOADS))
    p.add_argument("--dataset-tokens", type=int, default=None, help="tokens in the dataset (time and cost)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the dataset (time and cost)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


CLI_NUMBERS = ("dataset_tokens", "epochs", "gpu_memory_gib", "host_ram_gib", "price_per_hour", "electricity_price")
"""Numeric options outside TrainSetup (which checks its own): bounds in planner.options.BOUNDS."""


def setup_from_args(a: argparse.Namespace) -> TrainSetup:
    for name in CLI_NUMBERS:
        value = getattr(a, name, None)
        if value is not None:
            check_bound(name, value)
    return TrainSetup(
        # the optimizer in backward is for full fine-tuning: without --method (or in `table`) it picks it
        method=getattr(a, "method", None) or ("full" if a.optimizer_in_backward else TrainSetup().method),
        quant=getattr(a, "quant", None),
        double_quant=a.double_quant, kbit_prepare=a.kbit_upcast,
        precision=getattr(a, "precision", "bf16"),
        adapter_dtype=a.adapter_dtype, optimizer=a.optimizer, batch_size=a.batch_size, seq_len=a.seq_len,
        grad_checkpointing=a.grad_checkpointing, attention=a.attention, loss=a.loss, lora_r=a.lora_r,
        lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, lora_targets=a.lora_targets,
        modules_to_save=a.modules_to_save, num_gpus=a.num_gpus, sharding=a.sharding, offload=a.offload,
        offload_activations=a.offload_activations, optimizer_in_backward=a.optimizer_in_backward,
    )


_OFFLOADED = {"optimizer": "optimizer state", "params": "parameters, gradients and optimizer state"}


def _gib(n: int) -> str:
    return f"{n / GiB:8.2f} GiB"


def _describe(s: TrainSetup) -> str:
    method = s.method
    if s.is_peft:
        method += f" r={s.lora_r} {','.join(s.lora_targets)}"
    if s.method == "qlora":
        method += f" {s.quant}{' +dq' if s.double_quant else ''}"
    gpus = f" · {s.num_gpus} GPUs {s.sharding}" if s.num_gpus > 1 else ""
    return (f"{method} · {s.precision} · {s.optimizer} · batch {s.batch_size} x {s.seq_len} tokens · "
            f"checkpointing {s.checkpointing} · {s.attention}{' · chunked loss' if s.loss == 'chunked' else ''}"
            f"{' · optimizer in backward' if s.optimizer_in_backward else ''}{gpus}")


def cmd_estimate(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.memory import estimate

    setup = setup_from_args(a)
    est = estimate(resolve_model(a.model), setup)
    if a.json:
        print_json(est.to_json())
        return 0
    share = est.params_trainable / est.params_total if est.params_total else 0.0
    lines = [
        est.model,
        _describe(setup),
        f"params: {fmt_count(est.params_total)} total, {fmt_count(est.params_trainable)} trainable ({share:.2%})",
        "",
    ]
    for key, value in est.to_json()["bytes"].items():
        lines.append(f"  {key:<17}{_gib(value)}")
    lines += [
        "  " + "-" * 29,
        f"  {'peak allocated':<17}{_gib(est.peak_allocated_bytes)}   torch.cuda.max_memory_allocated",
        f"  {'peak reserved':<17}{_gib(est.peak_reserved_bytes)}   torch.cuda.max_memory_reserved",
        f"  {'device used':<17}{_gib(est.device_used_bytes)}   nvidia-smi",
    ]
    if est.host_bytes:
        s = est.setup
        what = [_OFFLOADED[s.offload]] if s.offload != "none" else []
        what += ["checkpointed activations"] if s.offload_activations else []
        lines.append(f"  {'host RAM':<17}{_gib(est.host_bytes)}   offloaded {'; '.join(what)}")
    lines.append(f"peak during: {est.peak_phase}")
    lines += ["assumptions:"] + [f"  - {x}" for x in est.assumptions]
    print("\n".join(lines))
    return 0


def cmd_simulate(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.memory import estimate
    from planner.simulate import simulate

    setup = setup_from_args(a)
    spec = resolve_model(a.model)
    est = estimate(spec, setup)  # first: it rejects a bad setup in milliseconds, the simulation in minutes
    sim = simulate(spec, setup)
    if a.json:
        # estimate's schema, with the simulated peaks; the per-term bytes are still the analytic ones
        doc = {**est.to_json(), **sim.to_json()}
        doc["assumptions"] = list(sim.assumptions) + ["bytes: per-term breakdown from the analytic estimator"]
        print_json(doc)
        return 0
    print(sim.model)
    print(_describe(setup))
    for phase, value in sim.phase_peaks.items():
        print(f"  {phase + ' peak':<17}{_gib(value)}")
    print("at the peak:")
    for category, value in sim.categories.items():
        print(f"  {category.replace('_', ' '):<17}{_gib(value)}")
    print("  " + "-" * 29)
    analytic = _gib(est.peak_allocated_bytes).strip()
    print(f"  {'peak allocated':<17}{_gib(sim.peak_allocated_bytes)}   (analytic estimate {analytic})")
    print(f"  {'peak reserved':<17}{_gib(sim.peak_reserved_bytes)}")
    print(f"  {'device used':<17}{_gib(sim.device_used_bytes)}")
    print("assumptions:")
    for note in sim.assumptions:
        print(f"  - {note}")
    return 0


def cmd_table(a: argparse.Namespace) -> int:
    from planner.table import COLUMNS, MOE_LAYOUT, classic_table, moe_columns

    base = setup_from_args(a)
    rows = classic_table(base)
    moe = moe_columns()
    if a.json:
        print_json({
            "quantity": "device_used_bytes",
            "batch_size": base.batch_size,
            "seq_len": base.seq_len,
            "columns": [{"size": size, "model": model, "moe_layout": MOE_LAYOUT if size in moe else None}
                        for size, model in COLUMNS],
            "rows": [{"method": r.method, "bits": r.bits,
                      "device_used_bytes": [e.device_used_bytes for e in r.estimates],
                      "peak_allocated_bytes": [e.peak_allocated_bytes for e in r.estimates]} for r in rows],
        })
        return 0
    print(f"GPU memory per GPU (GiB, as nvidia-smi shows it) · batch {base.batch_size} x {base.seq_len} tokens · "
          f"checkpointing {base.checkpointing} · {base.optimizer}"
          + (" · chunked loss" if base.loss == "chunked" else "")
          + (" · optimizer in backward (Full rows)" if base.optimizer_in_backward else ""))
    header = f"{'Method':<7}{'Bits':>5}" + "".join(f"{size:>9}" for size, _ in COLUMNS)
    print(header)
    for r in rows:
        print(f"{r.method:<7}{r.bits:>5}" + "".join(f"{e.device_used_bytes / GiB:9.1f}" for e in r.estimates))
    print("QLoRA 2 is a 2-bit base (HQQ-style): estimated only, the trainer does not offer it.")
    print(textwrap.fill(f"{', '.join(moe)} (mixture of experts): {MOE_LAYOUT}.", width=100))
    return 0


def cmd_gpus(a: argparse.Namespace) -> int:
    from planner.hardware import inventory
    from planner.hardware_text import inventory_lines

    inv = inventory()
    if a.json:
        print_json(inv.to_json())
        return 0
    print("\n".join(inventory_lines(inv)))
    return 0


PER_TOKENS = 1_000_000
"""Data set size assumed when --dataset-tokens is not given (the figures are then rates)."""


def _gpu_target(a: argparse.Namespace, count: int, prices):
    from planner.catalog.gpus import find_gpu
    from planner.targets import catalog_target, custom_target, detected_target

    if a.gpu_memory_gib is not None:
        return custom_target(a.gpu_memory_gib, count, prices)
    if a.gpu == "auto":
        from planner.hardware import inventory

        inv = inventory()
        if not inv.gpus:
            raise PlannerError(f"--gpu auto found no NVIDIA GPU ({inv.reason}); pass --gpu NAME "
                               "(e.g. --gpu 'RTX 4090') or --gpu-memory-gib X")
        g = inv.gpus[0]
        if g.name is None or not g.memory_total:
            raise PlannerError("--gpu auto: NVML did not report GPU 0's name or memory; pass --gpu NAME "
                               "or --gpu-memory-gib X")
        return detected_target(g.name, g.memory_total, g.index, count, prices)
    return catalog_target(find_gpu(a.gpu), count, prices)


def _recommend_kwargs(a: argparse.Namespace, prices) -> dict:
    electricity = a.electricity_price if a.electricity_price is not None else prices.electricity_usd_per_kwh
    # Without a data set size, hours, energy and cost are given per million tokens: still numbers
    return dict(dataset_tokens=a.dataset_tokens or PER_TOKENS, epochs=a.epochs, max_quality=a.max_quality,
                usd_per_hour=a.price_per_hour, usd_per_kwh=electricity, host_memory=_host_memory(a))


def _host_memory(a: argparse.Namespace) -> int | None:
    """The RAM offloading may use: --host-ram-gib, else this machine's when planning for its own
    GPU (--gpu auto), else unknown (the plan says what it needs instead)."""
    if a.host_ram_gib is not None:
        return int(a.host_ram_gib * GiB)
    if a.gpu == "auto":
        from planner.hardware import host_info

        return host_info().ram_total
    return None


def cmd_recommend(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.recommend import METHODS, recommend
    from planner.settings import load_prices

    if (a.gpu is None) == (a.gpu_memory_gib is None):
        raise PlannerError("give one of --gpu NAME|auto|any or --gpu-memory-gib X")
    base = setup_from_args(a)
    model = resolve_model(a.model)
    prices = load_prices()  # once per command: a bad settings file warns once
    if a.gpu == "any":
        return _recommend_any(a, model, base, prices)
    methods: tuple[tuple[str, str | None], ...] = METHODS
    if a.method:  # DESIGN: with --method given, only that method's options (an empty one: the default)
        methods = tuple((m, q) for m, q in METHODS if m == base.method and (a.quant is None or q == base.quant))
        if not methods:  # e.g. qlora with fp4: recommend compares the bases the trainer offers
            offered = ", ".join(q for m, q in METHODS if m == base.method and q)
            raise PlannerError(f"recommend compares --method {base.method} with --quant {offered}, not "
                               f"{base.quant}; use `python -m planner estimate` for a {base.quant} base")
    rec = recommend(model, base, _gpu_target(a, base.num_gpus, prices), methods=methods,
                    **_recommend_kwargs(a, prices))
    if a.dataset_tokens is None and rec.best is not None:
        from dataclasses import replace

        rec = replace(rec, explanation=rec.explanation + f" Hours, kWh and $ are per {PER_TOKENS:,} tokens "
                      "(give --dataset-tokens for your data set).")
    if a.json:
        print_json(rec.to_json())
        return 0
    from planner.recommend_text import recommendation_lines

    print("\n".join(recommendation_lines(rec)))
    return 0


def _recommend_any(a: argparse.Namespace, model, base, prices) -> int:
    from planner.catalog.gpus import gpu_catalog
    from planner.recommend import recommend
    from planner.recommend_text import ranking_lines
    from planner.targets import catalog_target

    kwargs = _recommend_kwargs(a, prices)
    ranked = []  # (recommendation, its best option): only GPUs something fits on
    for spec in gpu_catalog().values():
        rec = recommend(model, base, catalog_target(spec, base.num_gpus, prices), alternatives=False, **kwargs)
        if rec.best is not None:
            ranked.append((rec, rec.best))
    # cheapest total cost first; without a price or dataset size, fastest first
    ranked.sort(key=lambda pair: (pair[1].cost_usd is None, pair[1].cost_usd or 0.0, -pair[1].tokens_per_second))
    if a.json:
        print_json({"ranking": [{**r.to_json()["gpu"], "option": best.to_json(), "explanation": r.explanation}
                                for r, best in ranked]})
        return 0
    print("\n".join(ranking_lines([r for r, _ in ranked])))
    return 0


def cmd_gui(a: argparse.Namespace) -> int:
    from planner.gui.app import run

    return run(page=a.page, screenshot=a.screenshot)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="planner", description="Will this fine-tune fit on my GPU? Estimates before GPU time.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    gui = sub.add_parser("gui", help="open the desktop app")
    gui.add_argument("--page", default="plan", metavar="{plan,train,hardware,runs}")
    gui.add_argument("--screenshot", default=None, metavar="PNG", help="render the window, save it, exit")
    gui.set_defaults(func=cmd_gui)
    gpus = sub.add_parser("gpus", help="NVIDIA GPUs (NVML) and host RAM")
    gpus.add_argument("--json", action="store_true")
    gpus.set_defaults(func=cmd_gpus)
    est = sub.add_parser("estimate", help="peak GPU memory of one configuration, term by term")
    _add_options(est)
    est.set_defaults(func=cmd_estimate)
    sim = sub.add_parser("simulate", help="precise mode: one real training step on the meta device (needs torch)")
    _add_options(sim)
    sim.set_defaults(func=cmd_simulate)
    rec = sub.add_parser("recommend", help="the method, optimizer and batch to use on a GPU, time and cost")
    _add_options(rec)
    rec.add_argument("--gpu", default=None, help="catalog name (e.g. 'RTX 4090'), auto (NVML) or any (rank all)")
    rec.add_argument("--gpu-memory-gib", type=float, default=None, help="a custom GPU's memory instead of --gpu")
    rec.add_argument("--host-ram-gib", type=float, default=None,
                     help="RAM for offloaded activations (default: this machine's with --gpu auto, else unchecked)")
    rec.add_argument("--max-quality", action="store_true", help="prefer full fine-tuning when it fits")
    rec.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour (default: catalog snapshot)")
    rec.add_argument("--electricity-price", type=float, default=None, help="USD per kWh, for a local GPU")
    rec.set_defaults(func=cmd_recommend)
    table = sub.add_parser("table", help="7B..8x22B x Full/LoRA/QLoRA, like the classic table")
    _add_options(table, with_model=False)
    table.set_defaults(func=cmd_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            args = build_parser().parse_args(["gui"])
        return int(args.func(args))
    except PlannerError as exc:
        # one line even when the message quotes input holding a newline (a --model, a file name)
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: stop quietly, and keep the exit-time flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
