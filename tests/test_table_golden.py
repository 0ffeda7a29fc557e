"""The estimator's figures stay put through refactors: ``table --json`` equals the recorded output
byte for byte (issue 14: "behaviour does not change"). A deliberate change to the estimator
regenerates the files, and the diff shows every figure it moved:

    python -m planner table --json > tests/golden/table.json
    python -m planner table --seq-len 4096 --json > tests/golden/table-4096.json
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("name, args", [("table.json", []), ("table-4096.json", ["--seq-len", "4096"])])
def test_table_json_is_unchanged(name, args):
    done = subprocess.run([sys.executable, "-m", "planner", "table", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / name).read_text(), f"the estimator's figures moved; see {__doc__}"
