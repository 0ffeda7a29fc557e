#!/usr/bin/env python3
"""What each export choice costs: the adapter only vs ``--merge`` (issue 18), on the CPU.

The demo run (QLoRA on the tiny Llama) trains for ``--steps`` steps through the CLI, then
``python -m trainer export`` writes it both ways. For each: the export folder's size on disk, the
export's own time, the load time (in this process, after one warm-up load: median of ``--reps``)
and the time per generated token (greedy ``model.generate`` of ``--new-tokens`` tokens, the
prompt's forward included, after one warm-up: median of ``--reps``). The adapter is loaded the
way its consumer would, ``PeftModel.from_pretrained(base, adapter_dir)`` on the base in fp32:
unquantized, though the QLoRA adapter was trained on its 4-bit base (the merged export too is the
dequantized base plus the adapter). One torch thread: the loaded 2-core machines these run on
otherwise time the oversubscription.

    python scripts/bench_export.py [--steps 40] [--reps 5] [--new-tokens 64] [--run RUN_DIR]

``--run`` measures a finished demo run instead of training one (it is only read).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "reverse: rose lion bear fish"


def trainer(*args: str) -> float:
    """Run ``python -m trainer ARGS`` to the end; its wall time in seconds (exits on failure)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"error: python -m trainer {args[0]} exited {done.returncode}: {tail}")
    return time.perf_counter() - start


def train_demo(work: Path, steps: int) -> tuple[Path, Path]:
    """(the demo's base model folder, a finished demo run of ``steps`` steps)."""
    demo, run_dir = work / "demo", work / "run"
    trainer("make-demo", "--out", str(demo))
    config = json.loads((demo / "run.json").read_text())
    config.update(output_dir=str(run_dir), max_steps=steps, save_steps=0)
    (work / "run.json").write_text(json.dumps(config))
    trainer("run", "--config", str(work / "run.json"))
    return demo / "model", run_dir


def run_base(run_dir: Path) -> Path:
    """The base model folder a finished run trained on (its config.json's ``model``)."""
    return Path(json.loads((run_dir / "config.json").read_text())["model"])


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def median_s(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up: lazy imports, the page cache, allocator pools
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms_per_token(model: Any, tokenizer: Any, new_tokens: int, reps: int) -> float:
    import torch

    batch = tokenizer(PROMPT, return_tensors="pt")
    model.eval()

    def generate() -> None:
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        assert out.shape[1] == batch["input_ids"].shape[1] + new_tokens

    return median_s(generate, reps) * 1000 / new_tokens


def measure(base_dir: Path, run_dir: Path, work: Path, reps: int, new_tokens: int) -> dict[str, dict[str, float]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, merged_dir = work / "adapter", work / "merged"
    export = {"adapter": trainer("export", "--run", str(run_dir), "--out", str(adapter_dir)),
              "merged": trainer("export", "--run", str(run_dir), "--merge", "--out", str(merged_dir))}

    def base() -> Any:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    loaders = {"base": base, "adapter": lambda: PeftModel.from_pretrained(base(), str(adapter_dir)),
               "merged": lambda: AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)}
    folders = {"base": base_dir, "adapter": adapter_dir, "merged": merged_dir}
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    rows: dict[str, dict[str, float]] = {}
    for name, load in loaders.items():
        rows[name] = {"disk": disk_bytes(folders[name]), "load_ms": median_s(load, reps) * 1000}
        if name in export:
            rows[name].update(export_s=export[name], token_ms=ms_per_token(load(), tokenizer, new_tokens, reps))
    return rows


def table(rows: dict[str, dict[str, float]], reps: int, new_tokens: int) -> str:
    a, m = rows["adapter"], rows["merged"]
    added = a["token_ms"] - m["token_ms"]
    lines = [f"| export | disk (bytes) | export (s) | load (ms, median of {reps}) | "
             f"generate (ms/token, median of {reps} x {new_tokens} tokens) |", "|---|---|---|---|---|",
             f"| base model, fp32 (the adapter needs it) | {rows['base']['disk']:,} | - | "
             f"{rows['base']['load_ms']:.1f} | - |",
             f"| adapter only, unmerged on the fp32 base | {a['disk']:,} | {a['export_s']:.1f} | "
             f"{a['load_ms']:.1f} (base + adapter) | {a['token_ms']:.3f} |",
             f"| merged (`--merge`) | {m['disk']:,} | {m['export_s']:.1f} | {m['load_ms']:.1f} | {m['token_ms']:.3f} |",
             f"| added by the unmerged adapter | - | - | {a['load_ms'] - m['load_ms']:+.1f} | "
             f"{added:+.3f} ({added / m['token_ms']:+.0%}) |"]
    return "\n".join(lines)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _run_folder(text: str) -> Path:
    folder = Path(text)
    if not (folder / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a run folder (no config.json in it)")
    return folder


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}; see `python {self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def main() -> int:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=_positive, default=40, help="training steps of the demo run")
    parser.add_argument("--reps", type=_positive, default=5, help="timed repetitions (after one warm-up)")
    parser.add_argument("--new-tokens", type=_positive, default=64, help="tokens generated per repetition")
    parser.add_argument("--run", type=_run_folder, help="a finished run to measure instead of training the demo")
    args = parser.parse_args()
    import torch
    from transformers.utils import logging

    torch.set_num_threads(1)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        base_dir, run_dir = (run_base(args.run), args.run) if args.run else train_demo(work, args.steps)
        noise = io.StringIO()  # bitsandbytes' "pip install kernels", transformers' FutureWarnings
        try:
            with contextlib.redirect_stderr(noise):
                rows = measure(base_dir, run_dir, work, args.reps, args.new_tokens)
        except BaseException:
            sys.stderr.write(noise.getvalue())
            raise
    steps = json.loads((args.run / "config.json").read_text())["max_steps"] if args.run else args.steps
    print(f"Demo QLoRA run, {steps} steps; CPU, torch {torch.__version__}, 1 thread. Loads and generation "
          "in this process after one warm-up; the adapter on the fp32 (unquantized) base.\n")
    print(table(rows, args.reps, args.new_tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
