"""Mixture of experts trains as planned: experts per expert in 4-bit, LoRA with dropout on each,
adapters and merged exports that stock transformers and peft load, the planner's counts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import run_inprocess, steps, write_config

from trainer.config import TrainConfig

PROBE = [[5, 17, 42, 99, 7, 3, 250, 11]]


@pytest.fixture(scope="module", params=["lora", "qlora"])
def trained(request, moe_demo_dir, tmp_path_factory):
    """A LoRA/QLoRA run on the tiny Mixtral with the default LoRA dropout, which peft's fused
    ParamWrapper refuses."""
    run_dir = tmp_path_factory.mktemp(f"moe-{request.param}") / "run"
    config = write_config(moe_demo_dir, run_dir, method=request.param, lora_dropout=0.05, max_steps=30,
                          batch_size=4, save_steps=0)
    code, events = run_inprocess(config)
    assert code == 0, events[-2:]
    return request.param, run_dir, events


def _planned(run_dir, method: str):
    from trainer.prediction import predict

    cfg = replace(TrainConfig.load(run_dir / "config.json"), method=method)
    return predict(cfg, "fp32")[2]


def test_moe_learns_and_counts_what_the_planner_counts(trained):
    method, run_dir, events = trained
    losses = [e["loss"] for e in steps(events)]
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0], f"loss {losses[0]:.3f} -> {losses[-5:]}"
    start = events[0]
    planned = _planned(run_dir, method)
    # logical counts: QLoRA's 4-bit experts by their values, not their packed bytes; adapters out of the total
    assert (start["params_total"], start["params_trainable"]) == (planned.params_total, planned.params_trainable)
    # one adapter per expert projection: 4 layers x 4 experts x (w1, w2, w3), A and B each
    with open(run_dir / "adapter" / "adapter_config.json") as f:
        config = json.load(f)
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"}
    assert not config.get("target_parameters")
    from safetensors import safe_open

    with safe_open(run_dir / "adapter" / "adapter_model.safetensors", "pt") as f:
        experts = [k for k in f.keys() if ".experts." in k]
    assert len(experts) == 4 * 4 * 3 * 2
    assert "base_model.model.model.layers.0.mlp.experts.3.w2.lora_B.weight" in experts


@pytest.mark.parametrize("arch", ["qwen2_moe", "qwen3_moe", "olmoe"])
def test_other_moe_kinds_train_per_expert_in_4bit(arch, tmp_path):
    from trainer.demo import make_demo
    from trainer.export import main as export_main

    demo = tmp_path / "demo"
    make_demo(demo, arch=arch)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo, run_dir, method="qlora", lora_dropout=0.05, max_steps=12,
                                              batch_size=4, save_steps=0))
    assert code == 0, events[-2:]
    losses = [e["loss"] for e in steps(events)]
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses
    assert events[0]["params_trainable"] == _planned(run_dir, "qlora").params_trainable
    from safetensors import safe_open

    with safe_open(run_dir / "adapter" / "adapter_model.safetensors", "pt") as f:
        assert "base_model.model.model.layers.0.mlp.experts.3.down_proj.lora_A.weight" in set(f.keys())
    out = tmp_path / "adapter"
    assert export_main(str(run_dir), str(out)) == 0
    stock, mine, fused_targets = _stock_and_ours(demo, run_dir, out)
    if arch == "qwen2_moe":
        # peft 0.21 converts per-expert adapters for the model types it maps onto Qwen2-MoE's
        # conversion, but not for qwen2_moe itself: stock drops the routed experts' LoRA
        assert not fused_targets and (stock - mine).abs().max() > 1e-3, "peft now converts Qwen2-MoE: tell the README"
    else:
        assert fused_targets and (stock - mine).abs().max() < 1e-5


def test_full_fine_tuning_counts_what_the_planner_counts(moe_demo_dir, tmp_path):
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(moe_demo_dir, run_dir, method="full", max_steps=2, save_steps=0))
    assert code == 0
    assert events[0]["params_trainable"] == events[0]["params_total"] == _planned(run_dir, "full").params_trainable


def _base(moe_demo_dir, per_expert: bool, method: str = "lora"):
    """The demo's base model: stock transformers (fused experts) or the trainer's layout."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.loading import model_class

    if not per_expert:
        return AutoModelForCausalLM.from_pretrained(moe_demo_dir / "model", dtype=torch.float32)
    cfg = TrainConfig(model=str(moe_demo_dir / "model"), dataset="unused.jsonl", method=method)
    return model_class(cfg).from_pretrained(moe_demo_dir / "model", dtype=torch.float32)


def _logits(model):
    import torch

    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor(PROBE)).logits


def test_adapter_loads_on_stock_transformers_and_peft(trained, moe_demo_dir, tmp_path):
    """Stock transformers 5 fuses the experts and peft converts the per-expert adapter onto
    them; peft 0.21 refuses LoRA dropout there, which only acts in training: the exported
    adapter says 0. Both on the 16-bit base (a QLoRA adapter served unquantized)."""
    import torch

    from trainer.export import main as export_main

    _, run_dir, _ = trained
    out = tmp_path / "adapter"
    assert export_main(str(run_dir), str(out)) == 0
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == 0.0
    stock, mine, fused_targets = _stock_and_ours(moe_demo_dir, run_dir, out)
    assert fused_targets  # peft converted the adapter onto the fused experts: another route to the same function
    torch.testing.assert_close(stock, mine, rtol=0, atol=1e-5)


def _stock_and_ours(demo, run_dir, adapter):
    """Logits of ``adapter`` on stock transformers + peft (fused experts: peft converts the
    adapter onto them) and on the trainer's per-expert layout, both on the 16-bit base."""
    from peft import PeftModel

    from trainer.loading import model_layout

    stock = PeftModel.from_pretrained(_base(demo, per_expert=False), adapter)
    with model_layout(TrainConfig.load(run_dir / "config.json")):
        mine = PeftModel.from_pretrained(_base(demo, per_expert=True), adapter)
    return _logits(stock), _logits(mine), stock.peft_config["default"].target_parameters


def test_merged_export_loads_in_stock_transformers(trained, moe_demo_dir, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from trainer.export import main as export_main
    from trainer.loading import model_layout

    method, run_dir, _ = trained
    out = tmp_path / "merged"
    assert export_main(str(run_dir), str(out), merge=True) == 0
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in set(f.keys())  # the Hub's layout
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert merged.model.layers[0].mlp.experts.gate_up_proj.ndim == 3  # loaded by stock transformers
    cfg = TrainConfig.load(run_dir / "config.json")
    with model_layout(cfg):
        base = _base(moe_demo_dir, per_expert=True)
        if method == "qlora":  # the 4-bit weights the adapter trained against
            from trainer.loading import quantization_config

            base = type(base).from_pretrained(moe_demo_dir / "model", dtype=torch.float32, device_map={"": "cpu"},
                                              quantization_config=quantization_config(cfg, "fp32")).dequantize()
        exact = PeftModel.from_pretrained(base, run_dir / "adapter")
        want = _logits(exact)
    torch.testing.assert_close(_logits(merged), want, rtol=0, atol=1e-4)


def test_moe_stop_and_resume_continue_the_same_run(moe_demo_dir, tmp_path):
    common = dict(method="qlora", lora_dropout=0.0, max_steps=8, batch_size=4, save_steps=0)
    code, events = run_inprocess(write_config(moe_demo_dir, tmp_path / "whole", **common))
    assert code == 0
    whole = [e["loss"] for e in steps(events)]
    run_dir = tmp_path / "parts"
    config = write_config(moe_demo_dir, run_dir, **common,
                          extra={"test_command_at_step": {"step": 4, "command": "stop"}})
    code, first = run_inprocess(config)
    assert code == 0 and first[-1]["status"] == "stopped"
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["extra"] = {}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    code, second = run_inprocess(None, resume=run_dir)
    assert code == 0 and second[-1]["status"] == "completed"
    resumed = [e["loss"] for e in steps(first)] + [e["loss"] for e in steps(second)]
    assert resumed == pytest.approx(whole, abs=1e-4)


def test_prequantized_per_expert_checkpoint_trains(moe_demo_dir, tmp_path):
    """A ``*-bnb-4bit`` checkpoint in the per-expert layout (what the Hub's pre-quantized Mixtral
    repos hold), which stock transformers 5 cannot load."""
    import shutil

    import torch

    from trainer.loading import model_layout, quantization_config

    cfg = TrainConfig(model=str(moe_demo_dir / "model"), dataset="unused.jsonl", method="qlora")
    prequantized = tmp_path / "mixtral-bnb-4bit"
    with model_layout(cfg):
        from trainer.loading import model_class

        model = model_class(cfg).from_pretrained(moe_demo_dir / "model", dtype=torch.float32, device_map={"": "cpu"},
                                                 quantization_config=quantization_config(cfg, "fp32"))
        model.save_pretrained(prequantized)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (moe_demo_dir / "model" / name).exists():
            shutil.copy(moe_demo_dir / "model" / name, prequantized / name)
    from safetensors import safe_open

    with safe_open(prequantized / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight.absmax" in keys
    code, events = run_inprocess(write_config(moe_demo_dir, tmp_path / "run", model=str(prequantized),
                                              method="qlora", max_steps=3, batch_size=2, save_steps=0))
    assert code == 0, events[-2:]
    assert all(e["loss"] == e["loss"] for e in steps(events))
