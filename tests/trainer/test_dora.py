"""DoRA (peft use_dora) trains for real on the demo: the loss falls, the adapter carries its
magnitudes, loads with plain PeftModel.from_pretrained and reproduces the trained model."""

from __future__ import annotations

import json

import pytest
from conftest import run_inprocess, steps, write_config


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_dora_run_learns_and_its_adapter_loads_in_peft(demo_dir, tmp_path, method):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, method=method, use_dora=True, max_steps=60,
                                              save_steps=0))
    assert code == 0, events[-1]
    losses = [e["loss"] for e in steps(events)]
    assert losses[-1] < 0.7 * losses[0]
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    if method == "qlora":
        return  # its base is the 4-bit one: loading it unquantized would not reproduce the logits
    probe = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(demo_dir / "model", dtype=torch.float32)
        untouched = base(input_ids=probe).logits
        loaded = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
        assert any("lora_magnitude_vector" in name for name, _ in loaded.named_parameters())
        got = loaded(input_ids=probe).logits
    assert (got - untouched).abs().max() > 1e-2


def test_dora_on_full_fine_tuning_is_refused_in_one_line():
    from trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="use_dora: DoRA adapts LoRA"):
        TrainConfig(model="m", dataset="d.jsonl", method="full", use_dora=True)
