"""Stacks as presets (planner/stacks.py, resources/stacks/*.json): cited defaults, never over the
user's own choices, named in the estimate, and checked by precise mode."""

import json
import re
import subprocess
import sys
from dataclasses import fields

import pytest

from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import STACKS, TrainSetup
from planner.stacks import load_stack, planned

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")
CITATION = re.compile(r"\S+:\d+")


@pytest.mark.parametrize("name", STACKS)
def test_every_preset_names_real_knobs_each_with_a_file_and_line_at_a_named_commit(name):
    stack = load_stack(name)
    names = {f.name for f in fields(TrainSetup)}
    knobs = [*stack.settings.items(), *(kv for block in stack.methods.values() for kv in block.items())]
    assert set(stack.methods) <= {"full", "lora", "qlora"}
    for knob, setting in knobs:
        assert knob in names, knob
        assert CITATION.search(setting.source), (knob, setting.source)
        assert setting.why
    if name != "hf":
        assert knobs and re.search(r"@ [0-9a-f]{7,}", stack.version), stack.version


def test_an_unknown_stack_is_one_clear_error():
    with pytest.raises(PlannerError, match="--stack 'nemo' is not one of: hf, torchtune"):
        load_stack("nemo")


def test_a_preset_supplies_only_what_the_user_left_out():
    torchtune = load_stack("torchtune")
    lora = torchtune.apply(TrainSetup(method="lora"))
    assert (lora.loss, lora.adapter_dtype, lora.optimizer, lora.gradient_accumulation_steps, lora.stack) == (
        "chunked-output", "bf16", "adamw_torch_fused", 8, "torchtune")
    mine = torchtune.apply(TrainSetup(method="lora", loss="standard", explicit=frozenset({"loss"})))
    assert mine.loss == "standard" and mine.optimizer == "adamw_torch_fused"
    # the full recipe steps in backward; the user's accumulation makes that impossible, so it gives way
    full = torchtune.apply(TrainSetup(method="full", gradient_accumulation_steps=4,
                                      explicit=frozenset({"gradient_accumulation_steps"})))
    assert full.optimizer == "paged_adamw_8bit" and not full.optimizer_in_backward


def test_another_method_takes_that_methods_recipe():
    full = load_stack("torchtune").apply(TrainSetup(method="full"))
    assert full.optimizer_in_backward and full.optimizer == "paged_adamw_8bit"
    lora = planned(full, method="lora")
    assert (lora.optimizer, lora.optimizer_in_backward, lora.gradient_accumulation_steps) == ("adamw_torch_fused",
                                                                                              False, 8)
    assert planned(lora, method="full") == full


def test_the_estimate_names_the_stack_and_each_knob_it_changed():
    setup = load_stack("litgpt").apply(TrainSetup(method="qlora"))
    doc = estimate(LLAMA8, setup).to_json()["stack"]
    assert doc["name"] == "litgpt" and "v0.5.13" in doc["version"]
    assert set(doc["changed"]) == {"adapter_dtype", "grad_checkpointing", "lora_dropout", "kbit_prepare",
                                   "double_quant", "optimizer", "gradient_accumulation_steps"}
    assert doc["changed"]["optimizer"]["value"] == "paged_adamw_32bit" and doc["not_modelled"]
    lines = estimate(LLAMA8, setup).assumptions
    assert any(line.startswith("stack litgpt:") for line in lines)
    assert any(line.startswith("litgpt: optimizer paged_adamw_32bit") and "litgpt/finetune/lora.py" in line
               for line in lines)
    assert estimate(LLAMA8, TrainSetup()).to_json()["stack"] == {
        "name": "hf", "title": load_stack("hf").title, "version": load_stack("hf").version, "changed": {},
        "not_modelled": []}


def test_the_cli_takes_a_stack_and_the_users_flags_over_it():
    out = subprocess.run([sys.executable, "-m", "planner", "estimate", "--model", "meta-llama/Llama-3.1-8B",
                          "--method", "lora", "--stack", "torchtune", "--loss", "standard", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    changed = json.loads(out.stdout)["stack"]["changed"]
    assert "loss" not in changed and changed["optimizer"]["value"] == "adamw_torch_fused"
    bad = subprocess.run([sys.executable, "-m", "planner", "estimate", "--model", "meta-llama/Llama-3.1-8B",
                          "--stack", "deepspeed"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--stack 'deepspeed'" in bad.stderr


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_each_preset_agrees_with_precise_mode(name, method):
    """The new terms (torchtune's chunked output loss, Unsloth's chunk budget) and every preset's
    knobs, against a real step of the model on the meta device: within 5%."""
    from planner.simulate import simulate

    setup = load_stack(name).apply(TrainSetup(method=method, seq_len=2048))
    assert estimate(LLAMA8, setup).peak_allocated_bytes == pytest.approx(
        simulate(LLAMA8, setup).peak_allocated_bytes, rel=0.05)


@pytest.mark.parametrize("loss, chunk_mib", [("chunked-output", 0), ("chunked", 4096), ("standard", 0)])
def test_where_the_loss_is_the_peak_each_loss_agrees_with_precise_mode(loss, chunk_mib):
    """LoRA at 16k tokens: the logits are the peak (12 bytes per token and vocabulary entry with
    the standard loss, 4 with torchtune's, one 4 GiB chunk's worth with Unsloth's)."""
    from planner.simulate import simulate

    setup = TrainSetup(method="lora", seq_len=16_384, loss=loss, loss_chunk_mib=chunk_mib,
                       attention="flash_attention_2")
    est, sim = estimate(LLAMA8, setup), simulate(LLAMA8, setup)
    assert est.peak_allocated_bytes == pytest.approx(sim.peak_allocated_bytes, rel=0.05)
    assert est.breakdown.logits > 0


def test_the_losses_keep_what_they_should():
    def logits(**kw) -> int:
        return estimate(LLAMA8, TrainSetup(method="lora", seq_len=16_384, **kw)).breakdown.logits

    standard, output, budget, chunked = (logits(), logits(loss="chunked-output"),
                                         logits(loss="chunked", loss_chunk_mib=4096), logits(loss="chunked"))
    assert chunked < output < standard and chunked < budget < standard
    # one fp32 (T, V) buffer kept, not three, and one eighth's gradients (fp32 and bf16) as backward starts
    vocab = LLAMA8.arch.vocab_size
    assert output == pytest.approx(16_384 * vocab * 4 + 2_048 * vocab * (4 + 4 + 2), rel=0.01)
    # Unsloth's chunk holds 4 GiB of fp32 logits (8,371 tokens of a 128k vocabulary), beside their
    # bf16 original, log-probabilities and gradient, and the hidden states' gradient
    chunk = 4 * 2**30 // (vocab * 4)
    assert chunk == 8_371 and budget == pytest.approx(chunk * vocab * (3 * 4 + 2) + 16_384 * 4096 * 2, rel=0.01)
