#!/usr/bin/env python3
"""The Try page's figures (issue 18): time to the first token and tokens/s of the demo model on
the CPU, answered by its base, the tuned adapter (unmerged) and the merged export; and the memory
the planner predicts for an answer beside what the session measured.

Everything goes through ``python -m trainer generate``, the subprocess the Try page runs: one
session on the run (base and tuned share its loaded 4-bit base), one on the merged export. Each
answer is greedy and exactly ``--tokens`` long (``min_new_tokens``), the median of ``--repeats``
after one warm-up. One torch thread (``OMP_NUM_THREADS=1``): a loaded 2-core machine otherwise
times its oversubscription.

    python scripts/bench_try.py [--steps 40] [--tokens 64] [--repeats 5] [--run RUN_DIR]

``--run`` answers with a finished demo run instead of training one (it is only read).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = [{"role": "user", "content": "reverse: rose lion bear"}]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def trainer(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, env=ENV)


def train_demo(root: Path, steps: int) -> Path:
    trainer("make-demo", "--out", str(root / "demo"))
    config = json.loads((root / "demo" / "run.json").read_text())
    config.update(output_dir=str(root / "run"), max_steps=steps, save_steps=steps)
    (root / "run.json").write_text(json.dumps(config))
    trainer("run", "--config", str(root / "run.json"))
    return root / "run"


def session(args: list[str], requests: list[dict]) -> list[dict]:
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run([sys.executable, "-m", "trainer", "generate", "--device", "cpu", *args], cwd=ROOT,
                          input=lines, capture_output=True, text=True, check=True, env=ENV)
    return [json.loads(line) for line in done.stdout.splitlines()]


def answers(args: list[str], names: list[str], tokens: int, repeats: int) -> tuple[dict, dict[str, list[dict]]]:
    ask = {"op": "generate", "messages": PROMPT, "temperature": 0, "max_new_tokens": tokens, "min_new_tokens": tokens}
    requests = [{**ask, "id": f"{name}-{i}", "adapter": name} for name in names for i in range(repeats + 1)]
    requests += [{**ask, "id": f"{name}-measured", "adapter": name, "measure": True} for name in names]
    events = session(args, requests)
    done = {name: [e for e in events if e["event"] == "done" and e["id"].startswith(f"{name}-")
                   and e["id"] != f"{name}-0"] for name in names}  # -0: the warm-up
    return next(e for e in events if e["event"] == "ready"), done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", type=Path, help="a finished demo run to answer with instead of training one")
    args = parser.parse_args(argv)
    from planner.trying import predicted_bytes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = args.run or train_demo(root, args.steps)
        steps = json.loads((run / "config.json").read_text())["max_steps"]
        trainer("export", "--run", str(run), "--merge", "--out", str(root / "merged"))
        run_ready, run_done = answers(["--run", str(run)], ["base", "tuned"], args.tokens, args.repeats)
        merged_ready, merged_done = answers(["--model", str(root / "merged")], ["model"], args.tokens, args.repeats)
        rows = [("base (the run's 4-bit base, adapter off)", run_ready, run_done["base"], run),
                ("tuned (adapter unmerged)", run_ready, run_done["tuned"], run),
                ("merged export (fp32)", merged_ready, merged_done["model"], root / "merged")]
        print(f"Demo model ({steps} training steps), CPU, one thread, greedy, {args.tokens} new tokens, "
              f"median of {args.repeats}:\n")
        print("| answered by | load s | first token ms | tokens/s | peak predicted MiB | peak measured MiB | error |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, ready, done, source in rows:
            timed = [e for e in done if not e["id"].endswith("measured")]
            measured = next(e for e in done if e["id"].endswith("measured"))
            shape = (int(measured["prompt_tokens"]), int(measured["new_tokens"]))
            predicted = predicted_bytes(source, "cpu", shape)
            peak, guess = measured["peak_alloc_bytes"], predicted.peak if predicted else None
            error = f"{guess / peak - 1:+.1%}" if guess and peak else "n/a"
            print(f"| {label} | {ready['load_s']:.2f} | {statistics.median(e['ttft_s'] for e in timed) * 1000:.1f} | "
                  f"{statistics.median(e['tokens_per_s'] for e in timed):.0f} | "
                  f"{(guess or 0) / 2**20:.2f} | {peak / 2**20:.2f} | {error} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
