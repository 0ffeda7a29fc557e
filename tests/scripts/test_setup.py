"""scripts/setup.sh: installs once, says what it is doing, and `run.sh` after `test.sh` installs nothing.

The real script runs in a copy of the repository's top level whose `.venv/bin/python` is a stand-in
that records how it was called (a real install takes minutes and a network).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STAND_IN_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
case "$*" in
  *"print(torch.__version__)"*) echo 2.13.0 ;;
  *"import torch"*) [[ -f "$(dirname "$0")/../has-torch" ]] ;;
esac
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(STAND_IN_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return tmp_path


def _setup(repo: Path, *args: str) -> tuple[list[str], str]:
    """The pip commands one run of setup.sh issued, and what it printed on stderr."""
    log = repo / ".venv" / "calls.log"
    before = log.read_text().splitlines() if log.exists() else []
    done = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    after = log.read_text().splitlines() if log.exists() else []
    return [c for c in after[len(before):] if c.startswith("-m pip install")], done.stderr


def test_run_after_test_installs_nothing(repo):
    installs, _ = _setup(repo, "test")
    assert installs == ["-m pip install --quiet torch==2.13.0", "-m pip install --quiet -e .[test]"]
    assert _setup(repo) == ([], "")  # run.sh's set-up: the test extra already covered it
    assert _setup(repo, "test") == ([], "")


def test_the_test_extra_after_run_still_installs_it(repo):
    assert _setup(repo)[0][-1] == "-m pip install --quiet -e ."
    assert _setup(repo, "test")[0] == ["-m pip install --quiet torch==2.13.0", "-m pip install --quiet -e .[test]"]


def test_a_changed_pyproject_installs_again(repo):
    (repo / ".venv" / "has-torch").touch()
    _setup(repo, "test")
    now = time.time()
    for stamp in (repo / ".venv").glob(".installed*"):
        os.utime(stamp, (now - 10, now - 10))
    os.utime(repo / "pyproject.toml", (now - 5, now - 5))  # edited after the last set-up
    assert _setup(repo)[0] == ["-m pip install --quiet -e ."]
    assert _setup(repo)[0] == []


def test_each_step_is_announced_with_its_time(repo):
    _, err = _setup(repo, "test")
    lines = err.splitlines()
    assert all(line.startswith("set-up: ") for line in lines), err
    assert any("installing torch 2.13.0" in line for line in lines)
    assert any("installing the app and its dependencies" in line for line in lines)
    assert sum("done in" in line for line in lines) == 2
    assert lines[-1].startswith("set-up: ready in ")
    (repo / ".venv" / "has-torch").touch()
    (repo / ".venv" / ".installed").unlink()
    _, err = _setup(repo)
    assert "set-up: torch 2.13.0 is already installed" in err


def test_the_readme_names_the_torch_the_set_up_installs():
    pin = re.search(r'^torch_pin="([^"]+)"$', (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    assert pin is not None
    assert f"torch {pin.group(1)} if none" in (ROOT / "README.md").read_text()
