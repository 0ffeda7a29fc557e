"""scripts/bench_export.py: adapter-only vs merged export costs (issue 18), on a short demo run."""

import re
import subprocess
import sys

from scripttools import SCRIPTS

NUMBER = r"([+-]?[\d,]+(?:\.\d+)?)"


def _cells(out: str, label: str) -> list[str]:
    row = next((line for line in out.splitlines() if line.startswith(f"| {label}")), None)
    assert row, f"no {label!r} row in:\n{out}"
    return [cell.strip() for cell in row.strip("|").split("|")][1:]


def _number(cell: str) -> float:
    found = re.match(NUMBER, cell)
    assert found, cell
    return float(found.group(1).replace(",", ""))


def test_it_prints_the_size_load_and_token_latency_of_both_exports(demo_run):
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_export.py"), "--run", str(demo_run), "--reps", "1",
                           "--new-tokens", "4"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Demo QLoRA run, 60 steps" in out, out
    assert "median of 1 x 4 tokens" in out and "1 thread" in out, out
    adapter = [_number(c) for c in _cells(out, "adapter only")]
    merged = [_number(c) for c in _cells(out, "merged")]
    assert all(v > 0 for v in adapter + merged), out
    assert merged[0] > 5 * adapter[0], "the merged export holds the whole model, the adapter a fraction"
    assert _number(_cells(out, "base model")[0]) > 1e6
    added = _cells(out, "added by the unmerged adapter")
    assert re.fullmatch(NUMBER + r" \([+-]\d+%\)", added[-1]), out


def test_a_bad_count_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_export.py"), "--reps", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "positive whole number" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_export.py"), "--run", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a run folder" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
