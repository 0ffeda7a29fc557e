"""``python -m planner``: the command-line front end (DESIGN.md, "CLI contract").

Every command has ``--json``. Bad input exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Sequence

from planner.errors import PlannerError
from planner.options import ADAPTER_DTYPES, ATTENTIONS, METHODS, OFFLOADS, OPTIMIZERS, PRECISIONS, SHARDINGS, TrainSetup
from planner.units import GiB, fmt_count


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (its default prints the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlannerError(f"{message}; see `python -m {self.prog} --help`")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _alts(values: Sequence[str]) -> str:
    return "{" + ",".join(values) + "}"


def _add_options(p: argparse.ArgumentParser, with_model: bool = True) -> None:
    d = TrainSetup()
    if with_model:  # `table` has fixed models and rows that set method, quant and precision
        p.add_argument("--model", required=True,
                       help="catalog id (e.g. meta-llama/Llama-2-7b-hf), a config.json, or a model folder")
        p.add_argument("--method", default=d.method, metavar=_alts(METHODS))
        p.add_argument("--quant", default=None, metavar="{nf4,fp4,int8}", help="QLoRA base format (nf4)")
        p.add_argument("--precision", default=d.precision, metavar=_alts(PRECISIONS))
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=d.double_quant)
    p.add_argument("--adapter-dtype", default=d.adapter_dtype, metavar=_alts(ADAPTER_DTYPES))
    p.add_argument("--optimizer", default=d.optimizer, metavar=_alts(OPTIMIZERS))
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="micro-batch per GPU (1)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per sample (2048)")
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=d.grad_checkpointing)
    p.add_argument("--attention", default=d.attention, metavar=_alts(ATTENTIONS))
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


def setup_from_args(a: argparse.Namespace) -> TrainSetup:
    if a.dataset_tokens is not None and a.dataset_tokens <= 0:
        raise PlannerError(f"--dataset-tokens must be > 0, got {a.dataset_tokens}")
    if not (math.isfinite(a.epochs) and a.epochs > 0):
        raise PlannerError(f"--epochs must be a finite number > 0, got {a.epochs}")
    return TrainSetup(
        method=getattr(a, "method", "lora"), quant=getattr(a, "quant", None), double_quant=a.double_quant,
        precision=getattr(a, "precision", "bf16"),
        adapter_dtype=a.adapter_dtype, optimizer=a.optimizer, batch_size=a.batch_size, seq_len=a.seq_len,
        grad_checkpointing=a.grad_checkpointing, attention=a.attention, lora_r=a.lora_r,
        lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, lora_targets=a.lora_targets,
        modules_to_save=a.modules_to_save, num_gpus=a.num_gpus, sharding=a.sharding, offload=a.offload,
    )


def _gib(n: int) -> str:
    return f"{n / GiB:8.2f} GiB"


def _describe(s: TrainSetup) -> str:
    method = s.method
    if s.is_peft:
        method += f" r={s.lora_r} {','.join(s.lora_targets)}"
    if s.method == "qlora":
        method += f" {s.quant}{' +dq' if s.double_quant else ''}"
    gpus = f" · {s.num_gpus} GPUs {s.sharding}" if s.num_gpus > 1 else ""
    ckpt = "on" if s.grad_checkpointing else "off"
    return (f"{method} · {s.precision} · {s.optimizer} · batch {s.batch_size} x {s.seq_len} tokens · "
            f"checkpointing {ckpt} · {s.attention}{gpus}")


def cmd_estimate(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.memory import estimate

    setup = setup_from_args(a)
    est = estimate(resolve_model(a.model), setup)
    if a.json:
        print(json.dumps(est.to_json(), indent=2))
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
        lines.append(f"  {'host RAM':<17}{_gib(est.host_bytes)}   offloaded state")
    lines.append(f"peak during: {est.peak_phase}")
    lines += ["assumptions:"] + [f"  - {x}" for x in est.assumptions]
    print("\n".join(lines))
    return 0


def cmd_table(a: argparse.Namespace) -> int:
    from planner.table import COLUMNS, classic_table

    base = setup_from_args(a)
    rows = classic_table(base)
    if a.json:
        print(json.dumps({
            "quantity": "device_used_bytes",
            "batch_size": base.batch_size,
            "seq_len": base.seq_len,
            "columns": [{"size": size, "model": model} for size, model in COLUMNS],
            "rows": [{"method": r.method, "bits": r.bits,
                      "device_used_bytes": [e.device_used_bytes for e in r.estimates],
                      "peak_allocated_bytes": [e.peak_allocated_bytes for e in r.estimates]} for r in rows],
        }, indent=2))
        return 0
    print(f"GPU memory per GPU (GiB, as nvidia-smi shows it) · batch {base.batch_size} x {base.seq_len} tokens · "
          f"checkpointing {'on' if base.grad_checkpointing else 'off'} · {base.optimizer}")
    header = f"{'Method':<7}{'Bits':>5}" + "".join(f"{size:>9}" for size, _ in COLUMNS)
    print(header)
    for r in rows:
        print(f"{r.method:<7}{r.bits:>5}" + "".join(f"{e.device_used_bytes / GiB:9.1f}" for e in r.estimates))
    print("QLoRA 2 is a 2-bit base (HQQ-style): estimated only, the trainer does not offer it.")
    return 0


def cmd_gpus(a: argparse.Namespace) -> int:
    from planner.hardware import inventory

    inv = inventory()
    if a.json:
        print(json.dumps(inv.to_json(), indent=2))
        return 0
    if not inv.gpus:
        print(f"no GPU: {inv.reason}")
    for g in inv.gpus:
        used = f"{g.memory_used / GiB:.1f}" if g.memory_used is not None else "?"
        print(f"[{g.index}] {g.name:<32} {used} / {g.memory_total / GiB:.1f} GiB used")
    if inv.host:
        print(f"host RAM: {inv.host.available / GiB:.1f} GiB available of {inv.host.total / GiB:.1f} GiB")
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: stop quietly, and keep the exit-time flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
