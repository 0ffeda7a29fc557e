"""planner/cli_options.py: a setup written as options reads back as the same setup, so what the
Plan page hands to ``simulate`` is exactly what it estimated."""

import argparse

import pytest

from planner.cli_options import add_options, setup_args, setup_from_args
from planner.options import TrainSetup


@pytest.mark.parametrize("setup", [
    TrainSetup(),
    TrainSetup(method="qlora", quant="fp4", double_quant=False, kbit_prepare=False, loss="chunked",
               grad_checkpointing=True, offload_activations=True, lora_r=64, lora_alpha=16, lora_dropout=0.05,
               lora_targets=("q_proj", "v_proj"), modules_to_save=("lm_head",), batch_size=4,
               gradient_accumulation_steps=8, seq_len=4096, attention="flash_attention_2", adapter_dtype="bf16",
               packing=True),
    TrainSetup(method="full", precision="bf16-mixed", optimizer="adafactor", optimizer_in_backward=True,
               grad_checkpointing=False),
    TrainSetup(method="lora", num_gpus=4, sharding="fsdp", offload="optimizer", optimizer="paged_adamw_8bit"),
])
def test_options_round_trip(setup):
    parser = argparse.ArgumentParser()
    add_options(parser)
    args = parser.parse_args(["--model", "meta-llama/Llama-3.1-8B", *setup_args(setup)])
    assert setup_from_args(args) == setup
