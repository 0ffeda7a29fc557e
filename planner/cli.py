"""``python -m planner``: the command-line front end (DESIGN.md, "CLI contract").

Every command has ``--json``. Bad input exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from planner.cli_options import add_data_option, add_options, print_json, setup_from_args, with_data_file
from planner.cli_recommend import cmd_recommend
from planner.cli_runs import add_runs_parser
from planner.errors import PlannerError
from planner.options import (
    TrainSetup,
)
from planner.units import GiB, fmt_count


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (its default prints the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlannerError(f"{message}; see `python -m {self.prog} --help`")


_OFFLOADED = {"optimizer": "optimizer state", "params": "parameters, gradients and optimizer state"}


def _gib(n: int) -> str:
    return f"{n / GiB:8.2f} GiB"


def _describe(s: TrainSetup) -> str:
    method = s.method
    if s.is_peft:
        targets = f" {','.join(s.lora_targets)}" if s.low_rank or s.lora_targets != ("all-linear",) else ""
        method += f" {s.adapter_label}{targets if s.adapts_linears else ''}"
    if s.method == "qlora":
        method += f" {s.quant}{' +dq' if s.double_quant else ''}"
    gpus = f" · {s.num_gpus} GPUs {s.sharding}" if s.num_gpus > 1 else ""
    steps = s.gradient_accumulation_steps
    accumulated = f" x {steps} accumulated" if steps > 1 else ""
    return (f"{method} · {s.precision} · {s.optimizer} · batch {s.batch_size} x {s.seq_len} tokens{accumulated} · "
            f"checkpointing {s.checkpointing} · {s.attention}{' · chunked loss' if s.loss == 'chunked' else ''}"
            f"{' · optimizer in backward' if s.optimizer_in_backward else ''}{gpus}"
            f"{' · packed' if s.packing else ''}{f' · stack {s.stack}' if s.stack != 'hf' else ''}")


def cmd_estimate(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.memory import estimate

    setup = with_data_file(a, setup_from_args(a))
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
    from planner.table import ADAPTER_NOTE, COLUMNS, MOE_LAYOUT, classic_table, moe_columns

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
          + (" · optimizer in backward (Full rows)" if base.optimizer_in_backward else "")
          + (f" · stack {base.stack} (each row its recipe: docs/stacks.md)" if base.stack != "hf" else ""))
    header = f"{'Method':<8}{'Bits':>5}" + "".join(f"{size:>9}" for size, _ in COLUMNS)
    print(header)
    for r in rows:
        print(f"{r.method:<8}{r.bits:>5}" + "".join(f"{e.device_used_bytes / GiB:9.1f}" for e in r.estimates))
    print("QLoRA 2 is a 2-bit base (HQQ-style): estimated only, the trainer does not offer it.")
    print(textwrap.fill(ADAPTER_NOTE, width=100))
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
    add_options(est)
    add_data_option(est)
    est.set_defaults(func=cmd_estimate)
    sim = sub.add_parser("simulate", help="precise mode: one real training step on the meta device (needs torch)")
    add_options(sim)
    sim.set_defaults(func=cmd_simulate)
    rec = sub.add_parser("recommend", help="the method, optimizer and batch to use on a GPU, time and cost")
    add_options(rec)
    add_data_option(rec)
    rec.add_argument("--gpu", default=None, help="catalog name (e.g. 'RTX 4090'), auto (NVML) or any (rank all)")
    rec.add_argument("--gpu-memory-gib", type=float, default=None, help="a custom GPU's memory instead of --gpu")
    rec.add_argument("--host-ram-gib", type=float, default=None,
                     help="RAM for offloaded activations (default: this machine's with --gpu auto, else unchecked)")
    rec.add_argument("--max-quality", action="store_true", help="prefer full fine-tuning when it fits")
    rec.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour (default: catalog snapshot)")
    rec.add_argument("--electricity-price", type=float, default=None, help="USD per kWh, for a local GPU")
    rec.set_defaults(func=cmd_recommend)
    table = sub.add_parser("table", help="7B..8x22B x Full/LoRA/QLoRA, like the classic table")
    add_options(table, with_model=False)
    table.set_defaults(func=cmd_table)
    add_runs_parser(sub)
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
