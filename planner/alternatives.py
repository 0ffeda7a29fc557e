"""When nothing fits: what would, each with its own estimate.

More GPUs of the same kind (FSDP shards weights, gradients and optimizer state), the smallest
catalog GPU that fits, a shorter sequence on this GPU, or a smaller model of the same family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.catalog import ModelSpec, catalog, resolve_model
from planner.catalog.gpus import gpu_catalog
from planner.memory import estimate
from planner.options import TrainSetup
from planner.targets import GpuTarget
from planner.units import GiB

_GPU_COUNTS = (*range(2, 17), 24, 32, 48, 64)
"""FSDP shards over any number of GPUs: every count up to two 8-GPU nodes, so the fewest is exact."""
_LEANEST = dict(grad_checkpointing=True, batch_size=1, optimizer="paged_adamw_8bit", modules_to_save=())
_METHOD_WORDS = {("qlora", "nf4"): "QLoRA 4-bit", ("lora", None): "LoRA", ("full", None): "full fine-tuning"}


@dataclass(frozen=True)
class Alternative:
    text: str
    device_used_bytes: int
    """The alternative's own estimate (per GPU)."""


def _lean(base: TrainSetup, method: str, quant: str | None) -> TrainSetup:
    return replace(base, method=method, quant=quant, num_gpus=1, sharding="none", **_LEANEST)


def _fewest(model: ModelSpec, base: TrainSetup, gpu: GpuTarget, method: str, quant: str | None,
            offload: str) -> Alternative | None:
    for n in _GPU_COUNTS:
        setup = replace(_lean(base, method, quant), num_gpus=n, sharding="fsdp", offload=offload)
        est = estimate(model, setup)
        if est.device_used_bytes <= gpu.memory_bytes:
            how = " and CPU offload" if offload != "none" else ""
            host = f", {est.host_bytes / GiB:.0f} GiB in host RAM" if offload != "none" else ""
            return Alternative(f"{n} x {gpu.name} with FSDP{how} + {_METHOD_WORDS[(method, quant)]}: "
                               f"{est.device_used_bytes / GiB:.1f} GiB per GPU{host}", est.device_used_bytes)
    return None


def _more_gpus(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> list[Alternative]:
    """Per method, the fewest GPUs of this kind with FSDP, and with CPU offload when that needs fewer."""
    out: list[Alternative] = []
    for method, quant in (("qlora", "nf4"), ("lora", None), ("full", None)):
        plain = _fewest(model, base, gpu, method, quant, "none")
        offloaded = _fewest(model, base, gpu, method, quant, "params")
        gpus = lambda alt: int(alt.text.split(" x ")[0])  # noqa: E731
        if plain:
            out.append(plain)
        if offloaded and (plain is None or gpus(offloaded) < gpus(plain)):
            out.append(offloaded)
    return out


def _bigger_gpu(model: ModelSpec, base: TrainSetup) -> list[Alternative]:
    setup = _lean(base, "qlora", "nf4")
    used = estimate(model, setup).device_used_bytes
    for spec in sorted(gpu_catalog().values(), key=lambda g: (g.memory_bytes, g.name)):
        if used <= spec.memory_bytes:
            return [Alternative(f"a single {spec.name} ({spec.memory_bytes / GiB:.0f} GiB) fits QLoRA 4-bit at "
                                f"micro-batch 1: {used / GiB:.1f} GiB", used)]
    return []


def _shorter_sequence(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> list[Alternative]:
    setup = _lean(base, "qlora", "nf4")
    lo, hi = 0, base.seq_len - 1
    while lo < hi:  # the longest sequence below the asked one that fits
        mid = (lo + hi + 1) // 2
        if estimate(model, replace(setup, seq_len=mid)).device_used_bytes <= gpu.memory_bytes:
            lo = mid
        else:
            hi = mid - 1
    if lo < 128:
        return []
    used = estimate(model, replace(setup, seq_len=lo)).device_used_bytes
    return [Alternative(f"QLoRA 4-bit on this {gpu.name} fits sequences up to {lo:,} tokens at micro-batch 1 "
                        f"(you asked {base.seq_len:,}): {used / GiB:.1f} GiB", used)]


def _smaller_model(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> list[Alternative]:
    family = model.name.split("/")[0].lower()
    candidates = []
    for entry_id in catalog():
        if entry_id.split("/")[0].lower() != family or entry_id == model.name:
            continue
        other = resolve_model(entry_id)
        if other.arch.model_type != model.arch.model_type or other.total_params >= model.total_params:
            continue
        for method, quant in (("lora", None), ("qlora", "nf4")):
            used = estimate(other, _lean(base, method, quant)).device_used_bytes
            if used <= gpu.memory_bytes:
                candidates.append((other.total_params, entry_id, method, quant, used))
                break
    if not candidates:
        return []
    _, entry_id, method, quant, used = max(candidates)
    return [Alternative(f"a smaller model of the same family, {entry_id}, fits with "
                        f"{_METHOD_WORDS[(method, quant)]}: {used / GiB:.1f} GiB", used)]


def what_would_fit(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> tuple[Alternative, ...]:
    return tuple(_more_gpus(model, base, gpu) + _bigger_gpu(model, base)
                 + _shorter_sequence(model, base, gpu) + _smaller_model(model, base, gpu))
