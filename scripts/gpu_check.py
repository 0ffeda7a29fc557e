#!/usr/bin/env python3
"""A GPU check anyone with a GPU can run: measured memory and speed beside the planner's prediction.

    python scripts/gpu_check.py [--size small] [MODEL_DIR ...] --out-csv gpu_check.csv

On each visible GPU, one at a time (CUDA_VISIBLE_DEVICES set to its UUID), it trains a few steps
of the demo model (``python -m trainer make-demo --size small``, built in a temporary folder) and
of every model folder given, with full, LoRA and QLoRA, gradient checkpointing on and off: each
configuration is its own ``python -m trainer run`` process, so every run starts with a clean
allocator. It reads each run's events and prints measured vs predicted peak allocated, reserved
and device-used memory with the error, and tokens/s measured vs the time model's prediction for
that GPU (planner/cost.py; the NVML name matched to the GPU catalog).

The rows go to ``--out-csv`` in the calibration format: memory as resources/reference/
measurements.csv (one row per kind: allocated, reserved, device), speed as throughput.csv in
``<out>-throughput.csv`` beside it. Existing files are kept unless ``--force``.

Exit codes: 0 every run completed; 1 some run failed (its row says how); 2 no CUDA GPU visible,
or bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.accuracy import CSV_COLUMNS, settings  # noqa: E402
from planner.atomic import atomic_write_text  # noqa: E402
from planner.units import GiB  # noqa: E402

NO_GPU = "no CUDA GPU visible: gpu_check needs one"
THROUGHPUT_COLUMNS = ("model", "method", "gpus", "setting", "tokens_per_s", "source", "notes")
KINDS = (("allocated", "peak_alloc_bytes", "predicted_peak_bytes"),
         ("reserved", "peak_reserved_bytes", "predicted_reserved_bytes"),
         ("device", "peak_device_bytes", "predicted_device_bytes"))
"""(measurements.csv kind, the end event's measured field, the start event's predicted field)."""
SOURCE = "scripts/gpu_check.py"


@dataclass(frozen=True)
class Gpu:
    index: int
    """NVML index (PCI order)."""
    name: str
    uuid: str
    memory_bytes: int | None


@dataclass
class Result:
    """One configuration's run on one GPU: its config, its start and end events, its step rates."""

    gpu: Gpu
    model: str
    """The model as the rows name it (``trainer-demo-small``, or the folder given)."""
    config: dict[str, Any]
    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    """tokens/s of each step event."""
    error: str | None = None
    predicted_tps: float | None = None
    gpu_note: str = ""


def relative_error(measured: float | None, predicted: float | None) -> float | None:
    """(predicted - measured) / measured, as scripts/validate_estimator.py; None if either is missing."""
    if not measured or predicted is None:
        return None
    return (predicted - measured) / measured


def measured_tps(rates: list[float]) -> float | None:
    """The steady rate: the median of the step rates after the first (warm-up, kernel selection)."""
    steady = rates[1:] or rates
    return statistics.median(steady) if steady else None


def visible(gpus: list[Gpu], cuda_visible: str | None) -> list[Gpu]:
    """The GPUs CUDA_VISIBLE_DEVICES lets through: UUIDs (or their prefixes), or NVML indices (PCI
    order, as with CUDA_DEVICE_ORDER=PCI_BUS_ID); unset: all; empty: none."""
    if cuda_visible is None:
        return gpus
    chosen = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.isdigit():
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if entry and g.uuid.lower().startswith(entry.lower())]
        if len(match) != 1:
            break  # as CUDA does: the list stops at the first entry it cannot resolve
        chosen += [g for g in match if g not in chosen]
    return chosen


def catalog_gpu(name: str, memory_bytes: int | None) -> tuple[Any, str]:
    """(the GPU catalog's spec for an NVML name, or None; a note when unknown)."""
    from planner.catalog.gpus import match_nvml

    spec = match_nvml(name, memory_bytes)
    if spec is None:
        return None, f"{name} is not in the GPU catalog: no tokens/s prediction"
    return spec, ""


def predicted_tokens_per_s(config: dict[str, Any], precision: str, gpu: Gpu) -> tuple[float | None, str]:
    """The time model's tokens/s for ``config`` on ``gpu`` (planner/cost.py run_cost), with a note:
    with the data's own lengths, as the trainer pads them (or packs), since the run's tokens/s
    counts only the examples' tokens."""
    from dataclasses import replace

    from planner.catalog import resolve_model
    from planner.cost import run_cost
    from planner.errors import PlannerError
    from planner.lengths import measure_lengths
    from trainer.config import TrainConfig, setup_of

    spec, note = catalog_gpu(gpu.name, gpu.memory_bytes)
    if spec is None:
        return None, note
    try:
        cfg = TrainConfig.from_dict(config)
        model = resolve_model(cfg.model)
        setup = replace(setup_of(cfg, precision), lengths=measure_lengths(cfg.model, cfg.dataset))
        return run_cost(model.arch, setup, spec).tokens_per_second, spec.name
    except (PlannerError, TypeError, ValueError) as exc:
        return None, f"no tokens/s prediction: {exc}"


def parse_events(stdout: str) -> tuple[dict[str, Any], dict[str, Any], list[float], str | None]:
    """(start, end, step tokens/s, error message) from a run's stdout JSON lines."""
    start: dict[str, Any] = {}
    end: dict[str, Any] = {}
    rates: list[float] = []
    error = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "start":
            start = event
        elif kind == "end":
            end = event
        elif kind == "step" and isinstance(event.get("tokens_per_s"), (int, float)):
            rates.append(float(event["tokens_per_s"]))
        elif kind == "error":
            error = f"{event.get('type')}: {event.get('message')}"
    if error is None and end.get("status") != "completed":
        error = f"run ended {end.get('status', 'without an end event')}"
    return start, end, rates, error


def _on(flag: Any) -> str:
    return "on" if flag else "off"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _run_id(r: Result) -> str:
    c = r.config
    return f"gpu-check-{_slug(r.gpu.name)}-{_slug(r.model)}-{c['method']}-gc{_on(c['grad_checkpointing'])}"


def memory_rows(r: Result) -> list[dict[str, str]]:
    """The measurements.csv rows of one run: one per kind measured (values in GiB)."""
    if r.error:
        return []
    c = r.config
    rows = []
    for kind, measured_key, predicted_key in KINDS:
        measured, predicted = r.end.get(measured_key), r.start.get(predicted_key)
        if not measured:
            continue
        err = relative_error(measured, predicted)
        rows.append({
            "id": f"{_run_id(r)}-{kind}", "source": SOURCE, "framework": "hf+peft",
            **settings({**c, "model": r.model}, str(r.start.get("precision") or "")),
            "kind": kind, "value": f"{measured / GiB:.3f}", "unit": "GiB", "gpu": r.gpu.name,
            "notes": (f"predicted {predicted / GiB:.3f} GiB ({err:+.1%})" if err is not None else "no prediction")
                     + f"; {r.end.get('steps')} steps, packing {_on(c.get('packing'))}",
        })
    return rows


def throughput_row(r: Result) -> dict[str, str] | None:
    """The throughput.csv row of one run, or None when it failed or logged no step."""
    tps = measured_tps(r.rates)
    if r.error or tps is None:
        return None
    c = r.config
    err = relative_error(tps, r.predicted_tps)
    predicted = (f"predicted {r.predicted_tps:.0f} tokens/s ({err:+.1%})" if err is not None
                 else r.gpu_note or "no prediction")
    return {"model": r.model, "method": c["method"], "gpus": f"1x {r.gpu.name}",
            "setting": (f"bs{c['batch_size']} x {c['max_seq_len']} packed, checkpointing "
                        f"{_on(c['grad_checkpointing'])}, {len(r.rates)} steps"),
            "tokens_per_s": f"{tps:.0f}", "source": SOURCE, "notes": predicted}


def to_csv(columns: tuple[str, ...] | list[str], rows: list[dict[str, str]], comment: str) -> str:
    buffer = io.StringIO()
    buffer.write(f"# {comment}\n")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _gib(value: Any) -> str:
    return f"{value / GiB:.2f}" if isinstance(value, (int, float)) and value else "-"


def _pct(value: float | None) -> str:
    return f"{value:+.0%}" if value is not None else "-"


def table(results: list[Result]) -> str:
    """Measured vs predicted, one line per run (GiB, tokens/s; error = (predicted - measured) / measured)."""
    head = ["gpu", "model", "method", "ckpt"] + [f"{k} {w}" for k, _, _ in KINDS for w in ("GiB", "pred", "err")] \
        + ["tok/s", "pred", "err"]
    lines = [head]
    for r in results:
        row = [r.gpu.name, r.model, r.config["method"], _on(r.config["grad_checkpointing"])]
        if r.error:
            lines.append(row + [f"failed: {r.error}"])
            continue
        for _, measured_key, predicted_key in KINDS:
            measured, predicted = r.end.get(measured_key), r.start.get(predicted_key)
            row += [_gib(measured), _gib(predicted), _pct(relative_error(measured, predicted))]
        tps = measured_tps(r.rates)
        row += [f"{tps:.0f}" if tps else "-", f"{r.predicted_tps:.0f}" if r.predicted_tps else "-",
                _pct(relative_error(tps, r.predicted_tps))]
        lines.append(row)
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(head))]
    text = "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)
    notes = sorted({r.gpu_note for r in results if r.gpu_note})
    return text + "".join(f"\nnote: {n}" for n in notes)


def throughput_path(out: Path) -> Path:
    return out.with_name(out.stem + "-throughput.csv")


# -- the GPU side ---------------------------------------------------------------------------------
def nvml_gpus() -> list[Gpu]:
    from planner import hardware

    inv = hardware.inventory()
    return [Gpu(g.index, g.name or f"GPU {g.index}", g.uuid, g.memory_total) for g in inv.gpus if g.uuid]


def configurations(methods: list[str], checkpointing: list[bool]) -> list[tuple[str, bool]]:
    return [(m, gc) for m in methods for gc in checkpointing]


def run_config(base: dict[str, Any], model: str, demo: bool, method: str, gc: bool, args: argparse.Namespace,
               out: Path) -> dict[str, Any]:
    """The demo's run config changed to this check's configuration (the demo trains lm_head in full
    beside its adapters: a random base needs it; a real model's folder does not)."""
    return {**base, "model": model, "method": method, "grad_checkpointing": gc, "output_dir": str(out),
            "max_steps": args.steps, "batch_size": args.batch_size, "max_seq_len": args.seq_len,
            "packing": True, "gradient_accumulation_steps": 1, "save_steps": 0, "logging_steps": 1,
            "warmup_steps": 0, "eval_steps": 0, "val_split": 0.0, "device": "cuda",
            "modules_to_save": list(base.get("modules_to_save", [])) if demo and method != "full" else []}


def run_one(gpu: Gpu, name: str, config: dict[str, Any], work: Path) -> Result:
    path = work / f"{_slug(name)}-{config['method']}-gc{_on(config['grad_checkpointing'])}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu.uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    with open(path.with_suffix(".log"), "w") as log:
        done = subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=log, text=True, check=False)
    result = Result(gpu, name, config)
    result.start, result.end, result.rates, result.error = parse_events(done.stdout)
    if result.error and done.returncode:
        result.error += f" (exit {done.returncode}; log {path.with_suffix('.log')})"
    precision = str(result.start.get("precision") or "bf16")
    result.predicted_tps, note = predicted_tokens_per_s(config, precision, gpu)
    result.gpu_note = note if result.predicted_tps is None else ""
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL_DIR", help="local model folders to check too")
    parser.add_argument("--size", default="small", choices=("tiny", "small", "medium"), help="demo size (small)")
    parser.add_argument("--no-demo", action="store_true", help="check only the MODEL_DIRs")
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--checkpointing", default="on,off", help="on, off or on,off")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per packed row (the demo allows 512)")
    parser.add_argument("--out-csv", type=Path, required=True,
                        help="memory rows; speed rows go to <out>-throughput.csv beside it")
    parser.add_argument("--force", action="store_true", help="overwrite existing CSV files")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    checkpointing = [c.strip() == "on" for c in args.checkpointing.split(",") if c.strip()]
    if not methods or set(methods) - {"full", "lora", "qlora"} or not checkpointing:
        parser.error("--methods takes full,lora,qlora; --checkpointing takes on,off")
    if args.no_demo and not args.models:
        parser.error("--no-demo needs at least one MODEL_DIR")
    outs = (args.out_csv, throughput_path(args.out_csv))
    if not args.force and (taken := [str(p) for p in outs if p.exists()]):
        print(f"error: {', '.join(taken)} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    gpus = visible(nvml_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not gpus:
        print(NO_GPU, file=sys.stderr)
        return 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        demo = work / "demo"
        made = subprocess.run([sys.executable, "-m", "trainer", "make-demo", "--out", str(demo), "--size", args.size],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if made.returncode:
            last = (made.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"error: make-demo --size {args.size} failed (exit {made.returncode}): {last}", file=sys.stderr)
            return 2
        base = json.loads((demo / "run.json").read_text())
        models = ([] if args.no_demo else [(f"trainer-demo-{args.size}", str(demo / "model"), True)]) + \
            [(str(m), str(Path(m).resolve()), False) for m in args.models]
        for gpu in gpus:
            for name, model, is_demo in models:
                for method, gc in configurations(methods, checkpointing):
                    out = work / "runs" / f"{gpu.index}-{_slug(name)}-{method}-{_on(gc)}"
                    config = run_config(base, model, is_demo, method, gc, args, out)
                    result = run_one(gpu, name, config, work)
                    shutil.rmtree(out, ignore_errors=True)  # a full run's checkpoint is large; the events are read
                    results.append(result)
                    print(f"{gpu.name} {name} {method} checkpointing {_on(gc)}: "
                          f"{result.error or 'done'}", file=sys.stderr, flush=True)
    print(table(results))
    memory = [row for r in results for row in memory_rows(r)]
    speed = [row for r in results if (row := throughput_row(r)) is not None]
    atomic_write_text(outs[0], to_csv(CSV_COLUMNS, memory, f"measured by {SOURCE} (measurements.csv columns)"))
    atomic_write_text(outs[1], to_csv(THROUGHPUT_COLUMNS, speed, f"measured by {SOURCE} (throughput.csv columns)"))
    print(f"wrote {outs[0]} ({len(memory)} rows) and {outs[1]} ({len(speed)} rows)")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
