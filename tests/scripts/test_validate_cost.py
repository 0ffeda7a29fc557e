"""scripts/validate_cost.py: the one fitted constant of the time model is what its rows imply, the
reserved rows are only predicted, and each row's text becomes the setup it names."""

import pytest
from scripttools import load_script

from planner import calibration

script = load_script("validate_cost")
REFERENCE = script.DEFAULT_CSV.parent


def test_the_calibrated_utilization_is_the_rows_median():
    """A change to the time model that is not refitted shows here (`--fit`, then planner/calibration.py)."""
    rows = script.load_rows(script.DEFAULT_CSV)
    assert len(rows) == 14
    assert script.fit([script.implied_utilization(r) for r in rows]) == pytest.approx(
        calibration.MATMUL_UTILIZATION, abs=0.0015)


def test_the_reserved_rows_are_predicted_and_fit_nothing(capsys):
    before = calibration.MATMUL_UTILIZATION
    assert script.main(["--csv", str(REFERENCE / "independent_throughput.csv"), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.count("| meta-llama/Llama-3.2-3B |") == 8 and "nothing fitted on them" in out
    assert calibration.MATMUL_UTILIZATION == before


def test_a_rows_text_names_its_setup():
    s = script._setup("lora", "peft prompt virtual 200 bs4 x 210 no checkpointing", 1, "peft")
    assert (s.peft, s.virtual_tokens, s.batch_size, s.seq_len, s.grad_checkpointing) == ("prompt", 200, 4, 210, False)
    d = script._setup("lora", "DoRA r32 targets q_proj,v_proj bs4 x 210 compile FA2", 1, "x")
    assert d.use_dora and d.lora_r == 32 and d.lora_targets == ("q_proj", "v_proj")
    assert d.kernels == "compile" and d.attention == "flash_attention_2"
    # torchtune's rows take its recipe's bf16 adapters and no dropout
    t = script._setup("lora", "bs2 packed 2048 + compile", 1, "pytorch/torchtune README")
    assert t.adapter_dtype == "bf16" and t.lora_dropout == 0 and t.stack == "torchtune"
