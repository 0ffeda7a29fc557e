"""Shared fixtures for trainer tests: one offline demo (tiny Llama + tokenizer + data) per session."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[2]

# the test-only hooks (a run told to OOM or stop at a step through its config's `extra`), for
# in-process runs and every trainer subprocess the tests start (they inherit the environment)
from trainer_test_hooks import PLUGIN  # noqa: E402

os.environ.setdefault("FINETUNE_TRAINER_PLUGIN", PLUGIN)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.demo import make_demo

    out = tmp_path_factory.mktemp("shared-demo") / "demo"
    make_demo(out)
    return out


@pytest.fixture(scope="session")
def moe_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with a tiny Mixtral (4 experts, top-2), saved in the Hub's per-expert layout."""
    from trainer.demo import make_demo

    out = tmp_path_factory.mktemp("shared-moe-demo") / "demo"
    make_demo(out, arch="mixtral")
    return out


def write_config(demo: Path, run_dir: Path, **overrides: Any) -> Path:
    """The demo's run config with overrides, written next to the run directory."""
    cfg = json.loads((demo / "run.json").read_text())
    cfg.update(output_dir=str(run_dir), **overrides)
    path = run_dir.parent / f"{run_dir.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def run_inprocess(config: Path | None, resume: Path | None = None, stdin: str = "") -> tuple[int, list[dict]]:
    """Run the trainer in this process (no interpreter start-up); returns (exit code, stdout events)."""
    from trainer.run import main

    out = io.StringIO()
    code = main(str(config) if config else None, str(resume) if resume else None, stdin=io.StringIO(stdin), out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def read_metrics(run_dir: Path) -> list[dict]:
    """Every event of the run's history, as the app reads it: torn lines (a killed run) skipped."""
    from trainer.protocol import ProtocolError, decode

    events = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            decode(line)
        except ProtocolError:
            continue
        events.append(json.loads(line))
    return events


def steps(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "step"]


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]
