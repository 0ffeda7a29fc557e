"""Export: the adapter in peft's layout, or merged into a plain transformers model."""

from __future__ import annotations

import pytest
from conftest import run_inprocess, write_config

from trainer.export import main as export_main
from trainer.rundir import write_marker

PROBE = [[5, 17, 42, 99, 7, 3, 250, 11]]


@pytest.fixture(scope="module", params=["lora", "qlora"])
def trained(request, demo_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    code, _ = run_inprocess(write_config(demo_dir, run_dir, method=request.param, max_steps=10, save_steps=0))
    assert code == 0
    return request.param, run_dir


def _peft_logits(demo_dir, method, adapter, dequantize=False):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32}
    if method == "qlora":
        kwargs.update(device_map={"": "cpu"}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32))
    base = AutoModelForCausalLM.from_pretrained(demo_dir / "model", **kwargs)
    if dequantize:
        base = base.dequantize()
    with torch.no_grad():
        return PeftModel.from_pretrained(base, adapter).eval()(input_ids=torch.tensor(PROBE)).logits


def test_export_adapter(trained, demo_dir, tmp_path):
    method, run_dir = trained
    out = tmp_path / "adapter"
    assert export_main(str(run_dir), str(out)) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")) and not list(out.glob("optimizer*"))
    assert _peft_logits(demo_dir, method, out).isfinite().all()


def _merged_logits(run_dir, out, adapter_prefix: str):
    """``export --merge`` of the run: a plain model without the adapter's parameters; its logits on PROBE."""
    import torch
    from transformers import AutoModelForCausalLM

    assert export_main(str(run_dir), str(out), merge=True) == 0
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not any(adapter_prefix in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        return merged(input_ids=torch.tensor(PROBE)).logits


def test_export_merged_matches_adapter(trained, demo_dir, tmp_path):

    method, run_dir = trained
    got = _merged_logits(run_dir, tmp_path / "merged", "lora")
    # QLoRA merges onto the dequantized 4-bit base: exactly that base plus the adapter...
    exact = _peft_logits(demo_dir, method, run_dir / "adapter", dequantize=method == "qlora")
    assert (got - exact).abs().max() < 1e-4
    # ...which is the trained 4-bit model up to bitsandbytes' CPU kernel rounding
    trained_logits = _peft_logits(demo_dir, method, run_dir / "adapter")
    assert (got - trained_logits).abs().max() < (1e-4 if method == "lora" else 0.05)


def test_export_without_weights_fails_cleanly(demo_dir, tmp_path, capsys):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    write_marker(run_dir)
    (run_dir / "config.json").write_text((demo_dir / "run.json").read_text())
    assert export_main(str(run_dir), str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "neither a final adapter/ nor a complete checkpoint" in err and len(err.strip().splitlines()) == 1
    assert export_main(str(tmp_path / "nowhere"), str(tmp_path / "out")) == 2


@pytest.fixture(scope="module")
def ia3_run(demo_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ia3") / "run"
    code, _ = run_inprocess(write_config(demo_dir, run_dir, method="lora", peft="ia3", learning_rate=3e-2,
                                         modules_to_save=[], max_steps=10, save_steps=0))
    assert code == 0
    return run_dir


def test_an_ia3_adapter_merges_into_a_plain_model_that_computes_as_the_adapter(ia3_run, demo_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    got = _merged_logits(ia3_run, tmp_path / "merged", "ia3")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(demo_dir / "model", dtype=torch.float32)(
            input_ids=torch.tensor(PROBE)).logits
    adapter = _peft_logits(demo_dir, "lora", ia3_run / "adapter")
    assert (got - adapter).abs().max() < 1e-4
    assert (got - base).abs().max() > 1e-2  # the scaling vectors went into the weights


@pytest.mark.parametrize("peft", ["prompt", "prefix"])
def test_merging_virtual_tokens_is_one_line_and_exit_2(peft, demo_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _ = run_inprocess(write_config(demo_dir, run_dir, method="lora", peft=peft, modules_to_save=[],
                                         grad_checkpointing=False, max_steps=2, save_steps=0))
    assert code == 0
    capsys.readouterr()
    assert export_main(str(run_dir), str(tmp_path / "merged"), merge=True) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --merge: {peft} tuning adds virtual tokens: nothing to merge into the weights; "
                   "export the adapter (without --merge)\n")
    assert not (tmp_path / "merged").exists()
    assert export_main(str(run_dir), str(tmp_path / "adapter")) == 0  # the adapter itself exports
