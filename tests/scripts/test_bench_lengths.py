"""scripts/bench_lengths.py: planning with a data file, measured for real (a small file here)."""

import subprocess
import sys

from scripttools import SCRIPTS, load_script


def test_it_tokenizes_through_the_trainer_and_times_the_plan():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_lengths.py"), "--examples", "300"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "data: 300 examples" in proc.stdout and "python -m trainer lengths (first ask)" in proc.stdout


def test_the_padding_table_is_the_time_model_s():
    rows = [line.split(" | ") for line in load_script("bench_lengths").padding_table()[2:]]
    assert [(r[0].lstrip("| "), r[1]) for r in rows] == [("RTX 4090", "1"), ("RTX 4090", "8"), ("H100 SXM", "1"),
                                                          ("H100 SXM", "8")]

    def number(text: str) -> float:
        return float(text.strip("| %").replace(",", ""))

    for r in rows:
        assert number(r[4]) <= 1.02 * number(r[5])  # packing never loses more than attention's short-row gain
    assert number(rows[1][3]) < 50 and number(rows[1][4]) < 0.5 * number(rows[1][5])  # eight examples: mostly padding
