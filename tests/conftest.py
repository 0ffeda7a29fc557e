"""Suite-wide hooks: tests marked ``gpu`` run only where torch sees a CUDA GPU.

Whether it does is asked only when such a test was collected, and in a child Python unless this
process already imported torch: the GUI tests' process must stay torch-free (tests/gui/test_precise.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

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
