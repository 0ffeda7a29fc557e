"""scripts/bench_host_overhead.py: the host seconds per decoder layer behind
planner.calibration.HOST_SECONDS_PER_LAYER, measured for real on a tiny Llama."""

import json
import os
import subprocess
import sys

from scripttools import SCRIPTS


def test_it_measures_every_case_and_adapters_and_recompute_cost_host_time():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_host_overhead.py"), "--repeats", "5", "--json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert set(rows) == {"full, checkpointing off", "full, checkpointing on", "lora, checkpointing off",
                         "lora, checkpointing on", "adalora, checkpointing off", "trainer loop, per optimizer step"}
    assert all(0 < s < 0.05 for s in rows.values()), rows  # milliseconds, not the arithmetic
    # checkpointing runs the forward twice; LoRA adds its casts, matmuls, scaling and add per layer
    assert rows["lora, checkpointing on"] > rows["lora, checkpointing off"] > rows["full, checkpointing off"]
    # AdaLoRA adds its orthogonality penalty and its rank allocator to every step
    assert rows["adalora, checkpointing off"] > 1.5 * rows["lora, checkpointing off"]


def test_a_bad_count_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_host_overhead.py"), "--repeats", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "positive whole number" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

