"""scripts/bench_tensor_memory.py: the CPU tensor meter's cost (issue 16), on a short run."""

import re
import subprocess
import sys

from scripttools import SCRIPTS


def test_it_prints_a_measured_and_an_unmeasured_step_and_the_run_overhead():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_tensor_memory.py"), "--steps", "3", "--pairs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    step = re.search(r"demo step: ([\d.]+) ms unmeasured, ([\d.]+) ms measured .*peak tensor memory ([\d.]+) MiB", out)
    assert step and float(step.group(1)) > 0 and float(step.group(3)) > 1, out
    assert re.search(r"measured share over 1,000 steps: 4\.3%; run overhead [+-][\d.]+%", out), out
