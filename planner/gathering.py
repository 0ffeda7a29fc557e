"""What a sharded run holds unsharded at each candidate peak of forward and backward.

FSDP and ZeRO-3 keep 1/N of every parameter on each GPU and all-gather a unit whole just before
it computes. Which units are whole at a given moment is a fact of the sharding code:

* torch FSDP2 (what ``--sharding fsdp`` plans; accelerate's fsdp2_prepare_model wraps each decoder
  layer, the input embedding, and the final norm with the LM head as its own units):

  - forward, a unit's all-gather copy-out: the previous unit's all-gather buffer is still held
    (torch 2.13 ``FSDPParamGroup.wait_for_unshard`` binds it to a local, ``prev_all_gather_state``,
    after it "defer[s] free to allow for overlap of this copy-out with next all-gather
    collective"), beside this unit's buffer and the unsharded parameters it is copied into:
    three layers, or, for the tail unit (final norm and LM head) after the last layer, one layer
    and the tail twice;
  - the loss: no layer (each resharded after its forward), only the tail, which accelerate keeps
    gathered from its forward through its backward ("Tail gets `False`" for
    reshard_after_forward). Its all-gather buffer is held until the root's post-forward
    (``_fsdp_state.py``: "Free the last all-gather result"): through transformers' loss, computed
    inside the forward, but not through the loss's backward;
  - a layer's backward: itself and the layer prefetched for the next backward (backward
    prefetch frees each all-gather buffer at once after its copy-out): two layers. The tail was
    resharded after its own backward, first of all.

* DeepSpeed ZeRO-3: the current and the prefetched layer, at every moment.

Quantized weights are gathered packed (4-bit stays 4-bit); the rest in the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import Architecture, Block
from planner.options import TrainSetup
from planner.params import QUANT_BITS


@dataclass(frozen=True)
class Gathered:
    """Unsharded parameter bytes per GPU at each candidate peak (all 0 without FSDP or ZeRO-3)."""

    at_loss: int = 0
    """As backward starts, at the loss's largest buffers."""
    at_loss_forward: int = 0
    """The loss computed inside the model's forward, before the root's post-forward frees the last
    all-gather buffer."""
    at_layer: int = 0
    """Inside a layer's backward (its recompute and its gradients)."""
    at_copy_out: int = 0
    """Forward, while a layer's all-gather is copied out into its parameters."""
    stream_held: int = 0
    """Reserved beyond allocated: gathered blocks freed on the all-gather stream, which the compute
    stream cannot reuse at once (one more gathered pair stays reserved)."""


def layer_bytes(block: Block, setup: TrainSetup) -> int:
    """One decoder layer all-gathered whole: packed linears under QLoRA, the rest in the compute dtype."""
    linear = sum(lin.weight_params for lin in block.linears)
    wb = setup.compute_bytes
    packed = linear * QUANT_BITS[setup.quant or "nf4"] / 8 if setup.method == "qlora" else linear * wb
    return int(packed + (block.params - linear) * wb)


def gathered(arch: Architecture, setup: TrainSetup) -> Gathered:
    if setup.sharding not in ("fsdp", "zero3"):
        return Gathered()
    layer = max(layer_bytes(b, setup) for b in arch.blocks)
    if setup.sharding == "zero3":
        return Gathered(at_loss=2 * layer, at_loss_forward=2 * layer, at_layer=2 * layer, stream_held=2 * layer)
    tail = ((arch.lm_head_params or arch.embed_params) + arch.final_norm_params) * setup.compute_bytes
    copy_out = max(3 * layer, layer + 2 * tail)  # a layer's copy-out, or the tail's after the last layer
    return Gathered(at_loss=tail, at_loss_forward=2 * tail, at_layer=2 * layer, at_copy_out=copy_out,
                    stream_held=2 * layer)
