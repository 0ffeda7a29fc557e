"""AdaLoRA, IA3, prompt and prefix tuning train for real on the demo: the loss falls, the measured
peak is the planner's within 10%, the adapter folder is peft's for that method, and plain
``PeftModel.from_pretrained`` on a fresh base reproduces the trained model's logits. Bad
combinations are one config line; the peft version the AdaLoRA ``ranknum`` workaround targets is
pinned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_inprocess, steps, write_config

PROBE = [[5, 17, 42, 99, 7, 3, 250, 11]]
PEFT_TYPES = {"adalora": "ADALORA", "ia3": "IA3", "prompt": "PROMPT_TUNING", "prefix": "PREFIX_TUNING"}

# (peft, method, precision, learning rate, least fall of the mean loss from the first 5 logged
# steps to the last 5). Measured over 40 steps, one thread (first 5 -> last 5): adalora 8.63 ->
# 5.88 (its orthogonal regulariser included), ia3 6.59 -> 6.00, prompt 6.45 -> 6.07, prefix 6.52
# -> 5.73, ia3 on the 4-bit base 6.59 -> 6.01; at lr 1e-9 the same means move by 0.05 at most. The
# margins are about half the measured fall. AdaLoRA runs on a bf16 base: the case where peft 0.21
# makes its ranknum trainable (planner/simulate/adapters.py freeze_rank_counts).
CASES = [
    ("adalora", "lora", "bf16", 5e-3, 1.4),
    ("ia3", "lora", "fp32", 3e-2, 0.3),
    ("prompt", "lora", "fp32", 3e-2, 0.18),
    ("prefix", "lora", "fp32", 3e-2, 0.4),
    ("ia3", "qlora", "fp32", 3e-2, 0.3),
]
STEPS = 40


def _base(demo_dir: Path, method: str, precision: str = "fp32"):
    """The base the run trained against, freshly loaded: fp32 (or bf16), or the demo's 4-bit NF4
    one. Fresh matters for the 4-bit one: bitsandbytes (0.50, CPU) repacks a 4-bit weight on its
    first forward, and an adapter then put on that base gives logits about 0.008 off the trained
    model's (LoRA too)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {"dtype": torch.bfloat16 if precision == "bf16" else torch.float32}
    if method == "qlora":
        kwargs.update(device_map={"": "cpu"}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    return AutoModelForCausalLM.from_pretrained(demo_dir / "model", **kwargs).eval()


def _adalora_trainable(demo_dir: Path, init_r: int) -> int:
    """AdaLoRA's trained values on the demo, all-linear: per adapted linear A (r x d_in), B
    (d_out x r) and E (r); the LM head is not adapted. No ``ranknum``: it is a count, not a weight."""
    c = json.loads((demo_dir / "model" / "config.json").read_text())
    hidden, inter = c["hidden_size"], c["intermediate_size"]
    kv = c["num_key_value_heads"] * c.get("head_dim", hidden // c["num_attention_heads"])
    linears = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden),  # q, k, v, o
               (hidden, inter), (hidden, inter), (inter, hidden)]  # gate, up, down
    per_layer = sum(init_r * (d_in + d_out) + init_r for d_in, d_out in linears)
    return c["num_hidden_layers"] * per_layer


@pytest.mark.parametrize("peft, method, precision, lr, fall", CASES, ids=[f"{p}-{m}" for p, m, *_ in CASES])
def test_a_run_learns_and_its_adapter_reloads_in_peft_as_trained(demo_dir, tmp_path, peft, method, precision, lr,
                                                                 fall):
    import torch
    from peft import PeftModel

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    trained_at = tmp_path / "trained-logits.pt"
    code, events = run_inprocess(write_config(
        demo_dir, run_dir, method=method, peft=peft, precision=precision, learning_rate=lr, modules_to_save=[],
        max_steps=STEPS,
        save_steps=0, grad_checkpointing=peft != "prefix",
        extra={"test_logits_to": {"path": str(trained_at), "input_ids": PROBE}}))
    assert code == 0, events[-1]
    losses = [e["loss"] for e in steps(events)]
    assert len(losses) == STEPS
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - fall, losses
    # the planner's estimate of the run's peak (CPU live tensor bytes): measured 0.996 (ia3 on the
    # 4-bit base) to 1.077 (prefix) times it
    end = next(e for e in events if e["event"] == "end")
    assert 0.9 < end["peak_ratio"] < 1.1

    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == PEFT_TYPES[peft]
    if peft == "adalora":
        # the budget pruned ranks (a True/False mask per adapted linear), and ranknum never trained
        assert saved["rank_pattern"] and all(isinstance(m, list) for m in saved["rank_pattern"].values())
        kept = sum(sum(mask) for mask in saved["rank_pattern"].values())
        assert 0 < kept < len(saved["rank_pattern"]) * saved["init_r"]
        start = next(e for e in events if e["event"] == "start")
        assert start["params_trainable"] == _adalora_trainable(demo_dir, saved["init_r"])

    probe = torch.tensor(PROBE)
    trained = torch.load(trained_at)
    with torch.no_grad():
        untouched = _base(demo_dir, method, precision)(input_ids=probe).logits.float()
        loaded = PeftModel.from_pretrained(_base(demo_dir, method, precision), run_dir / "adapter").eval()
        got = loaded(input_ids=probe).logits.float()
    assert got.shape == trained.shape
    # bf16: the reload computes the pruned ranks only, the run masked them to zero; the sums round apart
    # by under one bf16 step at these logits (2**-6 from 2 to 4)
    assert (got - trained).abs().max() < (1e-4 if precision == "fp32" else 0.02)
    # the adapter changed the model (prompt tuning's logits also cover its virtual tokens, in front)
    assert (got[:, -probe.shape[1]:] - untouched).abs().max() > 0.1


@pytest.mark.parametrize("fields, message", [
    ({"peft": "prefix", "grad_checkpointing": True},
     "grad_checkpointing: prefix tuning needs grad_checkpointing false"),
    ({"peft": "prompt", "grad_checkpointing": False, "modules_to_save": ["lm_head"]},
     "modules_to_save: peft prompt adds virtual tokens and trains no layer"),
    ({"peft": "ia3", "method": "full"}, "peft: trains an adapter: it needs method lora or qlora"),
])
def test_combinations_peft_cannot_train_are_one_config_line(fields, message):
    from trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError) as caught:
        TrainConfig(model="m", dataset="d.jsonl", **fields)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert caught.value.field == message.split(":")[0]


def test_peft_is_0_21_2_whose_adalora_ranknum_turns_trainable_which_loading_freezes():
    """planner/simulate/adapters.py ``freeze_rank_counts`` works around peft 0.21's fp32 cast of
    AdaLoRA's adapters making ``ranknum`` a trainable parameter. On another peft version, check
    whether the cast still does that (tests below), then drop the workaround or move this pin."""
    import peft

    assert peft.__version__ == "0.21.2"


def test_after_loading_an_adalora_run_no_ranknum_requires_grad(demo_dir):
    from peft import get_peft_model

    from planner.simulate.adapters import peft_config
    from trainer.config import TrainConfig, setup_of
    from trainer.loading import load_model, resolve_runtime

    # a 16-bit base: peft casts the adapters to fp32, the cast that makes ranknum trainable
    cfg = TrainConfig(model=str(demo_dir / "model"), dataset="unused.jsonl", method="lora", peft="adalora",
                      precision="bf16", modules_to_save=(), device="cpu")
    rt = resolve_runtime(cfg)
    model = load_model(cfg, rt, total_steps=40)
    ranknums = [(name, p.requires_grad) for name, p in model.named_parameters() if "ranknum" in name]
    assert ranknums and not any(grad for _, grad in ranknums)
    assert any(p.requires_grad for name, p in model.named_parameters() if "lora_E" in name)
    # without the workaround peft 0.21 trains them: the reason it exists
    bare = get_peft_model(_base(demo_dir, "lora", "bf16"), peft_config(setup_of(cfg, rt.precision), 40))
    assert any(p.requires_grad for name, p in bare.named_parameters() if "ranknum" in name)
