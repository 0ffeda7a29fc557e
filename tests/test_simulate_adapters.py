"""The other adapters (AdaLoRA, IA3, prompt and prefix tuning): their terms by hand, and the
estimate against precise mode, which runs peft's own modules (issue 18 point 3: within 5%)."""

from __future__ import annotations

import pytest

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")  # 32 layers, hidden 4096, 8 KV heads of 128, MLP 14336


def test_parameter_counts_by_hand():
    def trained(**kw):
        return estimate(LLAMA8, TrainSetup(**kw)).params_trainable

    # IA3: a scale per output of k_proj and v_proj (1024 each), per input of down_proj (14336)
    assert trained(peft="ia3") == 32 * (1024 + 1024 + 14336)
    assert trained(peft="prompt", virtual_tokens=20) == 20 * 4096
    # prefix: a key and a value (8 KV heads x 128) per layer per virtual token (peft sizes it by the KV heads)
    assert trained(peft="prefix", virtual_tokens=20, grad_checkpointing=False) == 20 * 32 * 2 * 1024
    # AdaLoRA at its starting rank (1.5 x 16 = 24): A, B and one singular value per rank
    widths = 2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336)  # d_in + d_out: q, o; k, v; gate, up, down
    assert trained(peft="adalora", lora_r=16) == 32 * (24 * widths + 7 * 24)
    assert trained(peft="adalora", lora_r=16, adalora_init_r=32) == 32 * (32 * widths + 7 * 32)


def test_adalora_keeps_three_copies_of_its_adapters_beside_adam():
    lora = estimate(LLAMA8, TrainSetup(peft="lora", lora_r=24, grad_checkpointing=False))
    ada = estimate(LLAMA8, TrainSetup(peft="adalora", lora_r=16, adalora_init_r=24, grad_checkpointing=False))
    singular_values = 32 * 7 * 24
    assert ada.breakdown.adapters == lora.breakdown.adapters + 4 * singular_values
    assert ada.breakdown.optimizer == 5 * ada.breakdown.adapters  # AdamW's two moments + importance, two averages


def test_virtual_tokens_lengthen_what_the_model_runs():
    s = TrainSetup(peft="prompt", seq_len=2048, virtual_tokens=100)
    assert (s.model_seq_len, s.kv_len) == (2148, 2148)
    p = TrainSetup(peft="prefix", seq_len=2048, virtual_tokens=100, grad_checkpointing=False)
    assert (p.model_seq_len, p.kv_len) == (2048, 2148)
    # the model runs 2,148 positions for 2,048 of data: throughput in data tokens drops with them
    gpu = find_gpu("A100 80GB")
    one = run_cost(LLAMA8.arch, TrainSetup(peft="prompt", seq_len=2048, virtual_tokens=1), gpu).tokens_per_second
    prompt = run_cost(LLAMA8.arch, s, gpu).tokens_per_second
    assert prompt < one * 2049 / 2148 * 1.01


@pytest.mark.parametrize(("change", "words"), [
    (dict(peft="prefix"), "--peft prefix needs --no-grad-checkpointing"),
    (dict(peft="prompt", modules_to_save=("lm_head",)), "--modules-to-save trains layers"),
    (dict(peft="ia3", use_dora=True), "--use-dora is a kind of LoRA"),
    (dict(method="full", peft="ia3"), "--peft ia3 trains an adapter"),
    (dict(peft="adalora", lora_r=16, adalora_init_r=8), "--adalora-init-r 8 is below"),
])
def test_what_cannot_combine_is_one_line(change, words):
    with pytest.raises(PlannerError, match=words):
        TrainSetup(**change)


POINTS = [
    dict(),
    dict(grad_checkpointing=False),
    dict(method="qlora"),
    dict(seq_len=512, attention="eager", grad_checkpointing=False),
]


@pytest.mark.parametrize("peft", ["adalora", "ia3", "prompt", "prefix"])
@pytest.mark.parametrize("point", POINTS, ids=["default", "no-ckpt", "qlora", "eager-512"])
def test_estimate_within_5_percent_of_precise_mode(peft, point):
    from planner.simulate import simulate

    if peft == "prefix":  # no checkpointing (transformers 5), and a kernel the meta device has for its mask
        point = {"attention": "flash_attention_2", **point, "grad_checkpointing": False}
    setup = TrainSetup(peft=peft, **point)
    est, sim = estimate(LLAMA8, setup), simulate(LLAMA8, setup)
    assert est.peak_allocated_bytes == pytest.approx(sim.peak_allocated_bytes, rel=0.05)
    # and what the adapter adds above the weights, where its own terms live
    weights = est.breakdown.weights + est.breakdown.quant_state
    assert est.peak_allocated_bytes - weights == pytest.approx(sim.peak_allocated_bytes - weights, rel=0.05)


def test_precise_mode_refuses_sdpa_under_prefix_tuning_in_one_line():
    from planner.simulate import simulate

    with pytest.raises(PlannerError, match="cannot simulate sdpa under prefix tuning"):
        simulate(LLAMA8, TrainSetup(peft="prefix", grad_checkpointing=False))
