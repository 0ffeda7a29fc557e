"""Suite-wide hooks: tests marked ``gpu`` run only where torch sees a CUDA GPU.

Whether it does is asked only when such a test was collected, and in a child Python unless this
process already imported torch: the GUI tests' process must stay torch-free (tests/gui/test_precise.py).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_PROBE = "import torch; print(torch.cuda.is_available())"


def cuda_available() -> bool:
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip().endswith("True")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests or cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline demo (tiny Llama, its tokenizer, data and run config), made once by the trainer
    in a subprocess: the test process stays torch-free."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run([sys.executable, "-m", "trainer", "make-demo", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def varied_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 text examples of 1 to 400 words, log-normally spread like instruction data: a long tail
    that a micro-batch pads to (the time model's padding, planner/samples.py)."""
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("varied") / "varied.jsonl"
    words = "the cat sat on a mat while dogs ran far away over green hills".split()
    with path.open("w") as f:
        for _ in range(600):
            n = min(400, max(1, int(rng.lognormvariate(3.2, 0.9))))
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(n))}) + "\n")
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, demo_folder: Path) -> Path:
    """A finished demo run (QLoRA, 60 steps, a held-out split), trained once for every test that
    reads one (GUI pages, the Try and export benchmarks) by the real trainer in a subprocess."""
    root, repo = tmp_path_factory.mktemp("demo-run"), REPO
    config = json.loads((demo_folder / "run.json").read_text())
    config.update(output_dir=str(root / "run"), max_steps=60, val_split=0.1, save_steps=60)
    (root / "run.json").write_text(json.dumps(config))
    subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(root / "run.json")], cwd=repo, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return root / "run"
