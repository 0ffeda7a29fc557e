#!/usr/bin/env python3
"""Figures for the estimator: time per estimate, and `planner table` / `estimate` wall time
with Python start-up included (the targets: < 1 ms per estimate, < 0.5 s for the table).

    python scripts/bench_estimator.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from planner.catalog import catalog, resolve_model
from planner.memory import estimate
from planner.options import TrainSetup

ROOT = Path(__file__).resolve().parents[1]


def per_estimate_us() -> tuple[float, int]:
    specs = [resolve_model(i) for i in catalog()]
    setups = [TrainSetup(method=m) for m in ("full", "lora", "qlora")]
    n = 0
    start = time.perf_counter()
    for _ in range(5):
        for spec in specs:
            for s in setups:
                estimate(spec, s)
                n += 1
    return (time.perf_counter() - start) / n * 1e6, n


def recommend_ms(repeat: int = 5) -> tuple[float, int]:
    """One full recommendation (every option, no alternatives) for Llama-3.1-8B on an RTX 4090."""
    from planner.catalog.gpus import find_gpu
    from planner.recommend import recommend
    from planner.targets import GpuTarget

    spec = find_gpu("RTX 4090")
    gpu = GpuTarget(spec.name, spec.memory_bytes, 1, "catalog", spec)
    model = resolve_model("meta-llama/Llama-3.1-8B")
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(recommend(model, TrainSetup(), gpu, dataset_tokens=50_000_000, alternatives=False).options)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, n


def sample_us_per_gpu(gpus: int = 8, repeat: int = 200) -> float:
    """hardware.sample() against a stand-in NVML with `gpus` devices (no GPU here)."""
    import types

    import planner.hardware as hw

    class Mem:
        total, used, free = 24 * 2**30, 2**30, 23 * 2**30

    class Util:
        gpu, memory = 50, 20

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: gpus,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetName=lambda h: "NVIDIA GeForce RTX 4090",
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}", nvmlDeviceGetMemoryInfo=lambda h: Mem(),
        nvmlDeviceGetUtilizationRates=lambda h: Util(), nvmlDeviceGetTemperature=lambda h, s: 60,
        nvmlDeviceGetPowerUsage=lambda h: 300_000, nvmlDeviceGetEnforcedPowerLimit=lambda h: 450_000,
        nvmlDeviceGetPowerManagementLimit=lambda h: 450_000,
        nvmlDeviceGetCudaComputeCapability=lambda h: (8, 9), nvmlSystemGetDriverVersion=lambda: "555.42",
        nvmlSystemGetCudaDriverVersion_v2=lambda: 12040, nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetMigMode=lambda h: (0, 0), nvmlDeviceGetComputeRunningProcesses=lambda h: [],
        nvmlDeviceGetGraphicsRunningProcesses=lambda h: [], NVML_TEMPERATURE_GPU=0,
        NVMLError=Exception, NVML_VALUE_NOT_AVAILABLE=2**64 - 1)
    sys.modules["pynvml"] = fake
    hw.shutdown()
    hw.inventory()
    t0 = time.perf_counter()
    for _ in range(repeat):
        hw.sample()
    return (time.perf_counter() - t0) / repeat / gpus * 1e6


def wall(args: list[str], repeat: int = 7) -> float:
    """Median wall time of ``python ARGS`` in a fresh interpreter."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    us, n = per_estimate_us()
    baseline = wall(["-c", "pass"])
    table = wall(["-m", "planner", "table"])
    est = wall(["-m", "planner", "estimate", "--model", "meta-llama/Llama-3.1-70B", "--method", "qlora", "--json"])
    rec_ms, n_options = recommend_ms()
    print(f"estimate():                     {us:8.1f} us per call (mean of {n}, whole catalog x 3 methods)")
    print(f"recommend() Llama-3.1-8B/4090:  {rec_ms:8.1f} ms ({n_options} options with max batch/seq, cost)")
    print(f"hardware.sample():              {sample_us_per_gpu():8.1f} us per GPU (stand-in NVML, 8 GPUs)")
    print(f"python -c pass:                 {baseline * 1000:8.1f} ms (interpreter start-up alone)")
    print(f"python -m planner table:        {table * 1000:8.1f} ms wall, median of 7 (42 estimates)")
    print(f"python -m planner estimate:     {est * 1000:8.1f} ms wall, median of 7")


if __name__ == "__main__":
    main()
