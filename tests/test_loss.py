"""The chunked loss in the estimator (planner/loss.py, planner/activations.py): one chunk's fp32
buffers instead of the whole logits, the chunk sized by the rule the trainer uses too."""

import json

import pytest

from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.loss import loss_chunk_tokens
from planner.memory import estimate
from planner.options import TrainSetup
from planner.units import GiB

LLAMA3 = resolve_model("meta-llama/Llama-3.1-8B")  # vocab 128,256, hidden 4,096


def test_a_chunk_is_about_as_large_as_the_hidden_states():
    assert loss_chunk_tokens(4096, 128_256, 4096) == 128  # 4,096 tokens / ceil(31.3) = 32 chunks
    assert loss_chunk_tokens(1, 128_256, 4096) == 1 and loss_chunk_tokens(100, 1000, 4096) == 100
    assert loss_chunk_tokens(4096, 128_256, 4096) * 128_256 <= 4096 * 4096 * 1.01


def test_chunked_loss_charges_one_chunk_and_the_hidden_gradient():
    setup = TrainSetup(method="qlora", seq_len=4096, grad_checkpointing=False)
    plain = estimate(LLAMA3, setup)
    chunked = estimate(LLAMA3, TrainSetup(method="qlora", seq_len=4096, grad_checkpointing=False, loss="chunked"))
    c, v, h, t = 2, 128_256, 4096, 4096
    assert plain.breakdown.logits == t * v * 3 * 4  # 5.87 GiB: three fp32 (tokens x vocab) buffers
    # one chunk's buffers + dL/dhidden + the fp32 head's 16-bit copy (cast per chunk, gone by backward)
    expected = 128 * v * (3 * 4 + c) + t * h * c + c * v * h
    moving = max(expected, chunked.breakdown.activations)  # whichever moving part sets the peak
    assert chunked.peak_allocated_bytes < plain.peak_allocated_bytes - 4 * GiB
    assert chunked.breakdown.logits in (0, expected) and moving >= expected
    assert plain.breakdown.activations - chunked.breakdown.activations in (c * v * h, plain.breakdown.activations)
    assert any("chunked LM head" in a and "128 tokens per chunk" in a for a in chunked.assumptions)


def test_the_cli_takes_the_loss_and_refuses_an_unknown_one(capsys):
    from planner.cli import main

    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--loss", "chunked", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any("chunked" in a for a in doc["assumptions"])
    with pytest.raises(PlannerError, match="loss"):
        TrainSetup(loss="fused")
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--loss", "fused"]) == 2
    assert "'fused' is not one of" in capsys.readouterr().err
