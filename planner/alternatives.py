"""When nothing fits: what would, each with its own estimate, its planned setup, and whether the
app's trainer can run it.

More GPUs of the same kind (FSDP shards weights, gradients and optimizer state), CPU offload
(fewer GPUs, down to this one), the smallest catalog GPU that fits, a shorter sequence on this
GPU, or a smaller model of the same family. Each leaves the recommendation's headroom free
(planner.headroom): an alternative that fills the GPU to the last byte is the plan the
recommendation itself would warn against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from planner.catalog import ModelSpec, catalog, resolve_model
from planner.catalog.gpus import gpu_catalog, memory_text
from planner.headroom import fits_comfortably
from planner.launch import why_not_trainable
from planner.memory import Estimate, estimate
from planner.options import TrainSetup, at_micro_batch
from planner.stacks import planned
from planner.targets import GpuTarget
from planner.units import GiB

_GPU_COUNTS = (*range(2, 33), 48, 64)
"""FSDP shards over any number of GPUs: every count up to four 8-GPU nodes, so the fewest is exact."""
_OFFLOADS = ("optimizer", "params")
"""Tried in this order for each GPU count: offloading the optimizer state alone moves less over PCIe."""
_OFFLOAD_WORDS = {"optimizer": "CPU offload of the optimizer state",
                  "params": "CPU offload of parameters, gradients and optimizer state"}
_LEANEST: dict[str, Any] = dict(grad_checkpointing=True, optimizer="paged_adamw_8bit",
                                modules_to_save=())
_METHOD_WORDS = {("qlora", "nf4"): "QLoRA 4-bit", ("lora", None): "LoRA", ("full", None): "full fine-tuning"}


@dataclass(frozen=True)
class Alternative:
    text: str
    """What to change, in words, with its figures."""
    device_used_bytes: int
    """The alternative's own estimate (per GPU)."""
    setup: TrainSetup
    """The planned setup, as "Use" would hand it to the Train page."""
    model: str
    """The model it trains: the one asked about, or a smaller one of its family."""
    gpu_name: str
    """The GPU it is planned for: this one, or a bigger catalog GPU."""
    gpu_memory_bytes: int
    """That GPU's memory as the driver reports it (per GPU)."""
    trainable: str | None
    """Why the app's trainer cannot run ``setup`` (planner.launch), or None when it can."""

    @property
    def line(self) -> str:
        """The text, and the reason when the app cannot train it (CLI and JSON output)."""
        # a sentence, not a parenthesis: the reason may hold its own
        return self.text if self.trainable is None else f"{self.text}. The app cannot train this: {self.trainable}."


def _usage(used: int, memory: int, per_gpu: bool) -> str:
    """``19.6 of 24.0 GiB per GPU (18% free)``: the figures that show the headroom."""
    where = " per GPU" if per_gpu else ""
    return f"{used / GiB:.1f} of {memory / GiB:.1f} GiB{where} ({1 - used / memory:.0%} free)"


def _alternative(text: str, model: ModelSpec, setup: TrainSetup, est: Estimate, gpu_name: str,
                 memory: int) -> Alternative:
    return Alternative(text, est.device_used_bytes, setup, model.name, gpu_name, memory, why_not_trainable(setup))


def _lean(base: TrainSetup, method: str, quant: str | None) -> TrainSetup:
    # micro-batch 1, the global batch kept by accumulation
    return at_micro_batch(planned(base, method=method, quant=quant, num_gpus=1, sharding="none", offload="none",
                                  **_LEANEST), 1)


def _fewest(model: ModelSpec, base: TrainSetup, gpu: GpuTarget, method: str, quant: str | None,
            counts: tuple[int, ...], offloads: tuple[str, ...]) -> Alternative | None:
    """The fewest GPUs of this kind (FSDP) on which the method fits comfortably, with the first of
    ``offloads`` that does."""
    for n in counts:
        for offload in offloads:
            setup = replace(_lean(base, method, quant), num_gpus=n, sharding="fsdp", offload=offload)
            est = estimate(model, setup)
            if not fits_comfortably(est.device_used_bytes, gpu.memory_bytes):
                continue
            words = _METHOD_WORDS[(method, quant)]
            if offload == "none":
                text = f"{n} x {gpu.name} with FSDP + {words}"
            elif n == 1:
                text = f"one {gpu.name} with {_OFFLOAD_WORDS[offload]} (FSDP) + {words}"
            else:
                text = f"{n} x {gpu.name} with FSDP and {_OFFLOAD_WORDS[offload]} + {words}"
            text += f": {_usage(est.device_used_bytes, gpu.memory_bytes, per_gpu=n > 1)}"
            if offload != "none":
                text += f", {est.host_bytes / GiB:.0f} GiB in host RAM"
            return _alternative(text, model, setup, est, gpu.name, gpu.memory_bytes)
    return None


def _more_gpus(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> list[Alternative]:
    """Per method, the fewest GPUs of this kind with FSDP, and with CPU offload when that needs
    fewer (one GPU with offload included)."""
    out: list[Alternative] = []
    for method, quant in (("qlora", "nf4"), ("lora", None), ("full", None)):
        plain = _fewest(model, base, gpu, method, quant, _GPU_COUNTS, ("none",))
        offloaded = _fewest(model, base, gpu, method, quant, (1, *_GPU_COUNTS), _OFFLOADS)
        if plain:
            out.append(plain)
        if offloaded and (plain is None or offloaded.setup.num_gpus < plain.setup.num_gpus):
            out.append(offloaded)
    return out


def _bigger_gpu(model: ModelSpec, base: TrainSetup) -> list[Alternative]:
    setup = _lean(base, "qlora", "nf4")
    est = estimate(model, setup)
    used = est.device_used_bytes
    for spec in sorted(gpu_catalog().values(), key=lambda g: (g.memory_bytes, g.name)):
        if fits_comfortably(used, spec.memory_bytes):
            text = (f"a single {spec.name} ({memory_text(spec)}) fits QLoRA 4-bit at micro-batch 1: "
                    f"{_usage(used, spec.memory_bytes, per_gpu=False)}")
            return [_alternative(text, model, setup, est, spec.name, spec.memory_bytes)]
    return []


def _shorter_sequence(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> list[Alternative]:
    setup = _lean(base, "qlora", "nf4")
    lo, hi = 0, base.seq_len - 1
    while lo < hi:  # the longest sequence below the asked one that fits comfortably
        mid = (lo + hi + 1) // 2
        if fits_comfortably(estimate(model, replace(setup, seq_len=mid)).device_used_bytes, gpu.memory_bytes):
            lo = mid
        else:
            hi = mid - 1
    if lo < 128:
        return []
    shorter = replace(setup, seq_len=lo)
    est = estimate(model, shorter)
    text = (f"QLoRA 4-bit on this {gpu.name} fits sequences up to {lo:,} tokens at micro-batch 1 "
            f"(you asked {base.seq_len:,}): {_usage(est.device_used_bytes, gpu.memory_bytes, per_gpu=False)}")
    return [_alternative(text, model, shorter, est, gpu.name, gpu.memory_bytes)]


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
            setup = _lean(base, method, quant)
            est = estimate(other, setup)
            if fits_comfortably(est.device_used_bytes, gpu.memory_bytes):
                candidates.append((other.total_params, entry_id, other, setup, est))
                break
    if not candidates:
        return []
    _, entry_id, other, setup, est = max(candidates, key=lambda c: (c[0], c[1]))
    text = (f"a smaller model of the same family, {entry_id}, fits with {_METHOD_WORDS[(setup.method, setup.quant)]}: "
            f"{_usage(est.device_used_bytes, gpu.memory_bytes, per_gpu=False)}")
    return [_alternative(text, other, setup, est, gpu.name, gpu.memory_bytes)]


def what_would_fit(model: ModelSpec, base: TrainSetup, gpu: GpuTarget) -> tuple[Alternative, ...]:
    return tuple(_more_gpus(model, base, gpu) + _bigger_gpu(model, base)
                 + _shorter_sequence(model, base, gpu) + _smaller_model(model, base, gpu))
