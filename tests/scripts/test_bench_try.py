"""scripts/bench_try.py: the Try page's figures (issue 18) through the real generate subprocess."""

import re
import subprocess
import sys

from scripttools import SCRIPTS


def test_it_times_base_tuned_and_merged_and_sets_predicted_memory_beside_measured(demo_run):
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_try.py"), "--run", str(demo_run), "--tokens", "8",
                           "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    number = r" \| ([\d.]+)"
    rows = re.findall(r"^\| (base|tuned|merged)[^|]*" + number * 5 + r" \| ([+-][\d.]+)% \|$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["base", "tuned", "merged"], proc.stdout
    for _, load_s, ttft_ms, tokens_s, predicted, measured, error in rows:
        assert float(load_s) > 0 and float(ttft_ms) > 0 and float(tokens_s) > 0
        assert float(predicted) > 0 and float(measured) > 0
        assert abs(float(error)) < 5, proc.stdout  # the planner's inference memory against the session's measurement
