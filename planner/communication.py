"""Communication of a multi-GPU step: the ring collectives each sharding runs, over each GPU's link
(``GpuSpec.link_bytes_per_s``, cited per card in resources/gpus.json); planner/cost.py decides
what compute hides of them."""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import Architecture
from planner.catalog.gpus import GpuSpec
from planner.gathering import layer_bytes
from planner.options import TrainSetup
from planner.params import params

DDP_BUCKET_BYTES = 25 * 2**20
"""torch DDP's gradient bucket (``bucket_cap_mb=25``): the last one's all-reduce starts only when
backward has ended."""


@dataclass(frozen=True)
class Collectives:
    """Seconds of ring collectives on each GPU's link (Patarasuk & Yuan 2009; NCCL's all-gather and
    reduce-scatter send (n-1)/n of the tensor through every GPU's link, an all-reduce twice that)."""

    per_micro_batch: float
    """fsdp / zero3: each layer's parameters all-gathered for forward and again for backward (the
    recompute runs inside the layer's backward, while it is whole), its gradients reduce-scattered
    as its backward ends (planner/gathering.py: quantized weights travel packed)."""
    per_step: float
    """ddp: the gradients all-reduced once per optimizer step (accumulation runs without sync);
    zero2: reduce-scattered, and the updated parameter shards all-gathered."""
    unhidden: float
    """What no compute can overlap: before the first layer's all-gather and after the last layer's
    reduce-scatter (per micro-batch), or the last DDP bucket's all-reduce (per step)."""


def communication_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec) -> Collectives:
    n = setup.num_gpus
    if n < 2 or setup.sharding == "none":
        return Collectives(0.0, 0.0, 0.0)
    ring, link = (n - 1) / n, gpu.link_bytes_per_s
    grads = params(arch, setup, arch.total_params).trainable_bytes
    if setup.sharding in ("ddp", "zero2"):
        return Collectives(0.0, 2 * ring * grads / link, 2 * ring * min(DDP_BUCKET_BYTES, grads) / link)
    rest = (arch.embed_params + arch.lm_head_params + arch.final_norm_params) * setup.compute_bytes
    layers = [(b.count, layer_bytes(b, setup)) for b in arch.blocks]
    weights = sum(count * size for count, size in layers) + rest
    layer = max(size for _, size in layers)
    layer_grads = grads / arch.num_layers
    return Collectives(ring * (2 * weights + grads) / link, 0.0, ring * (layer + layer_grads) / link)
