"""planner/gathering.py: what FSDP2 and ZeRO-3 hold unsharded at each candidate peak."""

import pytest

from planner.catalog import resolve_model
from planner.gathering import Gathered, gathered, layer_bytes
from planner.memory import estimate
from planner.options import TrainSetup


def _tail(arch, compute_bytes: int = 2) -> int:
    return ((arch.lm_head_params or arch.embed_params) + arch.final_norm_params) * compute_bytes


def test_one_gpu_and_the_other_shardings_gather_nothing():
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    for setup in (TrainSetup(), TrainSetup(num_gpus=8, sharding="ddp"), TrainSetup(num_gpus=8, sharding="zero2")):
        assert gathered(arch, setup) == Gathered()


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.2-1B"])  # untied, tied head
def test_fsdp2_moments_follow_its_all_gather_buffers(name):
    arch = resolve_model(name).arch
    setup = TrainSetup(method="lora", num_gpus=8, sharding="fsdp")
    layer, tail = layer_bytes(arch.blocks[0], setup), _tail(arch)
    whole = gathered(arch, setup)
    assert whole.at_loss == tail  # every layer resharded after its forward; the tail is kept
    assert whole.at_loss_forward == 2 * tail  # and its all-gather buffer until the root's post-forward
    assert whole.at_layer == 2 * layer  # the layer and the one prefetched for the next backward
    # a copy-out holds the previous unit's buffer, this unit's, and the parameters it fills
    assert whole.at_copy_out == max(3 * layer, layer + 2 * tail)


def test_zero3_holds_the_current_and_the_prefetched_layer_throughout():
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    setup = TrainSetup(method="lora", num_gpus=8, sharding="zero3")
    two = 2 * layer_bytes(arch.blocks[0], setup)
    assert gathered(arch, setup) == Gathered(at_loss=two, at_loss_forward=two, at_layer=two, stream_held=two)


def test_quantized_layers_are_gathered_packed():
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    block = arch.blocks[0]
    lora, qlora = (layer_bytes(block, TrainSetup(method=m, num_gpus=8, sharding="fsdp")) for m in ("lora", "qlora"))
    linear = sum(lin.weight_params for lin in block.linears)
    assert lora - qlora == pytest.approx(linear * (2 - 0.5))  # 16-bit against 4-bit linears, the norms alike


def test_a_short_sequence_on_a_wide_vocabulary_peaks_at_the_tails_copy_out():
    """Llama-3.1-8B's 128k-token head is 1 GiB in bf16: gathered twice beside the last layer's
    buffer at the end of forward, it outweighs a 256-token step's loss (precise mode agrees:
    tests/test_simulate_fsdp.py)."""
    model = resolve_model("meta-llama/Llama-3.1-8B")
    setup = TrainSetup(method="lora", num_gpus=8, sharding="fsdp", seq_len=256)
    est = estimate(model, setup)
    whole = gathered(model.arch, setup)
    assert whole.at_copy_out == layer_bytes(model.arch.blocks[0], setup) + 2 * _tail(model.arch)
    assert est.breakdown.logits == 0 and est.breakdown.workspace >= whole.at_copy_out
