"""Precise mode: the meta-device step allocates exactly what the same step on real tensors does."""

import pytest

from planner.autocast_policy import CPU
from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup
from planner.simulate import CATEGORIES, PHASES, run_step, simulate

TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("checkpointing", [True, False])
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_meta_step_matches_real_tensors(method, checkpointing, kv_heads):
    config = {**TINY, "num_key_value_heads": kv_heads}
    setup = TrainSetup(method=method, precision="fp32", batch_size=2, seq_len=128, grad_checkpointing=checkpointing)
    meta = run_step(config, 2, setup, "meta")
    real = run_step(config, 2, setup, "cpu")
    for phase in PHASES:
        assert meta[phase] == pytest.approx(real[phase], rel=0.01), phase


def test_two_layers_extrapolate_exactly():
    setup = TrainSetup(method="lora", precision="fp32", batch_size=1, seq_len=64)
    one, two, four = (run_step(TINY, n, setup) for n in (1, 2, 4))
    for phase in PHASES:
        assert one[phase] + 3 * (two[phase] - one[phase]) == four[phase]


def test_simulation_agrees_with_the_analytic_estimate():
    model = resolve_model("meta-llama/Llama-3.1-8B")
    for setup in (TrainSetup(method="lora"), TrainSetup(method="full"), TrainSetup(method="qlora"),
                  TrainSetup(method="full", optimizer="adamw_8bit"), TrainSetup(method="lora", precision="bf16-mixed")):
        sim, est = simulate(model, setup), estimate(model, setup)
        assert est.peak_allocated_bytes == pytest.approx(sim.peak_allocated_bytes, rel=0.10)
        assert sim.device_used_bytes > sim.peak_reserved_bytes >= sim.peak_allocated_bytes


@pytest.mark.parametrize("model, setup, message", [
    ("meta-llama/Llama-3.1-8B", TrainSetup(method="qlora", quant="int8"), "int8"),
    ("deepseek-ai/DeepSeek-V2-Lite", TrainSetup(method="lora"), "MoE model type 'deepseek_v2' is not supported yet"),
])
def test_what_is_not_simulated_says_so(model, setup, message):
    with pytest.raises(PlannerError, match=message) as err:
        simulate(resolve_model(model), setup)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method, precision, kbit_prepare", [
    ("lora", "bf16", True), ("lora", "bf16-mixed", True), ("full", "bf16-mixed", True),
    ("qlora", "bf16", True), ("qlora", "bf16", False)])
@pytest.mark.parametrize("checkpointing", [True, False])
def test_autocast_replay_matches_torch_autocast(method, precision, kbit_prepare, checkpointing):
    """QLoRA included: bitsandbytes quantizes and multiplies on the meta device through its own
    fake kernels, and on the CPU for real."""
    setup = TrainSetup(method=method, precision=precision, adapter_dtype="fp32", batch_size=2, seq_len=64,
                       grad_checkpointing=checkpointing, kbit_prepare=kbit_prepare)
    meta = run_step(TINY, 2, setup, "meta", policy=CPU)
    real = run_step(TINY, 2, setup, "cpu")
    for phase in PHASES:
        assert meta[phase] == pytest.approx(real[phase], rel=0.01), phase


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_categories_add_up_and_name_the_persistent_bytes(method):
    setup = TrainSetup(method=method, precision="bf16", adapter_dtype="fp32", batch_size=2, seq_len=64)
    step = run_step(TINY, 2, setup)
    for phase in PHASES:
        split = step.categories[phase]
        assert set(split) == set(CATEGORIES) and sum(split.values()) == step[phase], phase
        assert min(split.values()) >= 0, (phase, split)
    optimizer = step.categories["optimizer"]
    # AdamW keeps two moments the size of the gradients (plus a 4-byte step count per tensor)
    assert optimizer["gradients"] > 0
    assert optimizer["optimizer_state"] == pytest.approx(2 * optimizer["gradients"], rel=1e-3)
    assert step.categories["backward"]["activations"] > 0


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("checkpointing", [True, False])
def test_moe_meta_step_matches_a_real_step(arch, method, checkpointing):
    """The trainer's per-expert layout, real routing on the CPU vs even routing on meta: the
    saved activations add up the same over the experts; only one expert's transient during a
    checkpointed forward follows how many tokens it really got."""
    import torch

    from trainer.demo import model_config

    config = model_config(arch, 1000).to_dict()
    setup = TrainSetup(method=method, precision="fp32", batch_size=2, seq_len=64, grad_checkpointing=checkpointing)
    meta = run_step(config, 2, setup, "meta", policy=CPU)
    torch.manual_seed(0)  # the real routing (random weights and ids) must not depend on the tests run before
    real = run_step(config, 2, setup, "cpu")
    assert max(meta.phases.values()) == pytest.approx(max(real.phases.values()), rel=0.01)
    for phase in PHASES:
        # forward: the busiest expert's transient follows its real share of the tokens, which random
        # weights spread unevenly (seed 0: QLoRA Mixtral's real forward peak, with no gradients alive
        # yet, is 5.6% above even routing's)
        assert meta[phase] == pytest.approx(real[phase], rel=0.01 if phase != "forward" else 0.07), phase


def test_moe_simulation_agrees_with_the_analytic_estimate():
    model = resolve_model("mistralai/Mixtral-8x7B-v0.1")
    for setup in (TrainSetup(method="lora"), TrainSetup(method="qlora")):
        sim, est = simulate(model, setup), estimate(model, setup)
        assert est.peak_allocated_bytes == pytest.approx(sim.peak_allocated_bytes, rel=0.10)
        assert any("routing spread evenly" in a for a in sim.assumptions)


def test_the_cli_says_what_it_cannot_simulate_in_one_line(capsys):
    from planner.cli import main

    assert main(["simulate", "--model", "deepseek-ai/DeepSeek-V2-Lite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not supported yet" in err


@pytest.mark.parametrize("precision, weight_bytes", [("fp32", 4), ("bf16-mixed", 4), ("bf16", 2)])
def test_weights_take_the_runs_dtype_not_the_checkpoints(precision, weight_bytes):
    """A bfloat16 checkpoint trained with fp32 master weights holds 4 bytes per weight (transformers
    5 builds a config's own dtype unless told otherwise)."""
    config = {**TINY, "dtype": "bfloat16"}
    step = run_step(config, 1, TrainSetup(method="full", precision=precision, batch_size=1, seq_len=16))
    params = 2 * 1000 * 256 + (4 * 256 * 256 - 2 * 256 * 128) + 3 * 256 * 768 + 3 * 256  # embed, head, layer
    assert step.categories["forward"]["parameters"] == pytest.approx(weight_bytes * params, rel=0.01)


def test_the_stacks_losses_step_on_meta_as_on_real_tensors_where_they_are_the_peak():
    """A 32k vocabulary over a narrow model: the loss is the step's peak, and torchtune's chunked
    output loss and Unsloth's chunk budget allocate on the meta device what they do for real."""
    config = {**TINY, "vocab_size": 32_000}
    peaks = {}
    for loss, chunk_mib in (("standard", 0), ("chunked-output", 0), ("chunked", 2)):
        setup = TrainSetup(method="lora", precision="fp32", batch_size=2, seq_len=256, loss=loss,
                           loss_chunk_mib=chunk_mib)
        meta, real = run_step(config, 1, setup, "meta", policy=CPU), run_step(config, 1, setup, "cpu")
        for phase in PHASES:
            assert meta[phase] == pytest.approx(real[phase], rel=0.01), (loss, phase)
        peaks[loss] = max(real.phases.values())
    whole = 512 * 32_000 * 4  # one fp32 (tokens, vocab) buffer
    # three such buffers at once; one kept (the log-probabilities) and a chunk's; a 2 MiB chunk's
    assert peaks["standard"] - peaks["chunked-output"] > 1.5 * whole
    assert peaks["chunked-output"] - peaks["chunked"] > 0.8 * whole


def test_categories_tell_a_storage_from_a_later_one_at_the_same_address():
    """Freed addresses are reused: a gradient allocated after the backward peak where a loss buffer
    was must not be counted as a gradient at that peak (it once split Llama-3.1-8B's peak into
    +31 GiB of gradients and -29 GiB of temporaries, differently from run to run)."""
    model = resolve_model("meta-llama/Llama-3.1-8B")
    runs = [simulate(model, TrainSetup(method=m, seq_len=2048)).categories for m in ("qlora", "lora", "qlora")]
    assert runs[0] == runs[2]
    for split in runs:
        assert min(split.values()) >= 0, split
        assert split["gradients"] == 0  # the peak is backward's start: no LoRA gradient exists yet


@pytest.mark.parametrize("checkpointing", [True, False])
def test_dora_meta_step_matches_real_tensors(checkpointing):
    setup = TrainSetup(method="lora", use_dora=True, precision="fp32", batch_size=2, seq_len=64,
                       grad_checkpointing=checkpointing)
    meta, real = run_step(TINY, 2, setup, "meta"), run_step(TINY, 2, setup, "cpu")
    for phase in PHASES:
        assert meta[phase] == pytest.approx(real[phase], rel=0.01), phase


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B"])
@pytest.mark.parametrize("changes", [
    {"grad_checkpointing": False, "seq_len": 2048}, {"grad_checkpointing": False, "seq_len": 256},
    {"seq_len": 128}, {"seq_len": 2048}, {"seq_len": 512, "lora_targets": ("q_proj", "v_proj")},
    {"seq_len": 256, "adapter_dtype": "bf16"}, {"seq_len": 256, "precision": "fp32"},
])
def test_dora_estimate_agrees_with_precise_mode(model, changes):
    """DoRA's terms (planner/activations.py): the magnitude vector, two more outputs kept per
    adapted layer, and the weight renormalization's transient, which alone is the layer's peak at
    short sequences."""
    spec = resolve_model(model)
    setup = TrainSetup(method="lora", use_dora=True, **changes)
    assert estimate(spec, setup).peak_allocated_bytes == pytest.approx(simulate(spec, setup).peak_allocated_bytes,
                                                                       rel=0.05)
    plain = estimate(spec, TrainSetup(method="lora", **changes))
    assert estimate(spec, setup).params_trainable > plain.params_trainable


def test_dora_on_a_4_bit_base_is_estimated_not_simulated():
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    setup = TrainSetup(method="qlora", use_dora=True)
    assert estimate(spec, setup).peak_allocated_bytes > estimate(spec, TrainSetup(method="qlora")).peak_allocated_bytes
    with pytest.raises(PlannerError, match="cannot simulate DoRA on a 4-bit base"):
        simulate(spec, setup)
