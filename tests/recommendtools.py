"""Shared by the recommender's tests: catalog models and GPUs by name, and the re-derivation of an
alternative from its own planned setup."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache

import pytest

from planner.alternatives import _GPU_COUNTS
from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu, gpu_catalog
from planner.headroom import fits_comfortably
from planner.launch import why_not_trainable
from planner.memory import estimate
from planner.options import TrainSetup
from planner.targets import GpuTarget
from planner.units import GiB


@cache
def model(name: str):
    return resolve_model(name)


def target(gpu_name: str, count: int = 1) -> GpuTarget:
    spec = find_gpu(gpu_name)
    return GpuTarget(spec.name, spec.memory_bytes, count, "catalog", spec)


def custom(gib: float, speed_of: str = "A100 80GB SXM") -> GpuTarget:
    """A GPU of any memory size, with a catalog GPU's speed (the search only reads its memory)."""
    return GpuTarget(f"custom {gib:g} GiB", int(gib * GiB), 1, "custom", find_gpu(speed_of))


def used(model_id: str, setup: TrainSetup) -> int:
    return estimate(model(model_id), setup).device_used_bytes


# ------------------------------------------------------------------ checking an alternative


def _comfortable(model_id: str, setup: TrainSetup, memory: int) -> bool:
    return fits_comfortably(used(model_id, setup), memory)


def check_alternative(model_id: str, base: TrainSetup, gpu: GpuTarget, alt) -> str:
    """Re-derive the alternative from its own planned setup: the estimate, the headroom the
    recommendation demands, the figures in its text, whether the trainer can run it, and that it is
    the least change of its kind. Returns its kind."""
    s = alt.setup
    assert used(alt.model, s) == alt.device_used_bytes, alt.text
    assert fits_comfortably(alt.device_used_bytes, alt.gpu_memory_bytes), alt.text  # HEADROOM free, never 0%
    shown, of = (float(x) for x in re.search(r"([\d.]+) of ([\d.]+) GiB", alt.text).groups())
    assert shown == pytest.approx(alt.device_used_bytes / GiB, abs=0.051), alt.text
    assert of == pytest.approx(alt.gpu_memory_bytes / GiB, abs=0.051), alt.text
    assert f"({1 - alt.device_used_bytes / alt.gpu_memory_bytes:.0%} free)" in alt.text
    assert alt.trainable == why_not_trainable(s)
    assert (alt.trainable is None) == (s.offload == "none"), alt.text  # offload is the one thing it cannot run
    assert alt.line.endswith(f"The app cannot train this: {alt.trainable}.") if alt.trainable else alt.line == alt.text
    assert (s.batch_size, s.grad_checkpointing, s.modules_to_save) == (1, True, ())  # the leanest
    if s.sharding == "fsdp":
        n = s.num_gpus
        assert (alt.model, alt.gpu_name, alt.gpu_memory_bytes) == (model_id, gpu.name, gpu.memory_bytes)
        assert alt.text.startswith(f"{n} x {gpu.name} with FSDP" if n > 1 else f"one {gpu.name} with CPU offload")
        offloads = ("none",) if s.offload == "none" else ("optimizer", "params")
        counts = _GPU_COUNTS if s.offload == "none" else (1, *_GPU_COUNTS)
        # the fewest GPUs: the next smaller count tried fits comfortably with none of the offloads
        if counts.index(n) > 0:
            fewer = counts[counts.index(n) - 1]
            assert not any(_comfortable(model_id, replace(s, num_gpus=fewer, offload=o), gpu.memory_bytes)
                           for o in offloads), alt.text
        return "fsdp" if s.offload == "none" else "offload"
    assert (s.num_gpus, s.sharding, s.offload) == (1, "none", "none")
    if alt.gpu_name != gpu.name:
        spec = find_gpu(alt.gpu_name)
        assert alt.text.startswith(f"a single {spec.name} ({spec.datasheet_gb:g} GB datasheet")
        assert alt.gpu_memory_bytes == spec.memory_bytes > gpu.memory_bytes, alt.text
        assert (s.method, s.quant, alt.model) == ("qlora", "nf4", model_id)
        # the smallest catalog GPU that holds it with headroom
        assert not any(fits_comfortably(alt.device_used_bytes, g.memory_bytes)
                       for g in gpu_catalog().values() if g.memory_bytes < spec.memory_bytes)
        return "bigger"
    assert alt.gpu_memory_bytes == gpu.memory_bytes
    if alt.model != model_id:
        assert model(alt.model).total_params < model(model_id).total_params, alt.text
        assert alt.text.startswith(f"a smaller model of the same family, {alt.model}")
        return "smaller"
    assert s.seq_len < base.seq_len and (s.method, s.quant) == ("qlora", "nf4"), alt.text
    assert f"up to {s.seq_len:,} tokens" in alt.text
    assert not _comfortable(model_id, replace(s, seq_len=s.seq_len + 1), gpu.memory_bytes)
    return "shorter"
