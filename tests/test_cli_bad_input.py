"""Bad input at the edges (issue 12): over-long model names, 400-digit and 1e300 option values,
a LoRA rank wider than the model. Each is one `error:` line and exit 2; --json is strict JSON."""

from __future__ import annotations

import json
import time

import pytest
from clitools import run_error, run_ok

from planner import cli
from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import BOUNDS, TrainSetup

MODEL = "meta-llama/Llama-2-7b-hf"  # hidden size 4096
HUGE = "9" * 400


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every other language's parser does."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# --- 1. --model longer than a file name may be ---------------------------------------------------

@pytest.mark.parametrize("name", ["a" * 256, "a" * 5000, "org/" + "m" * 300, "x" * 300 + ".json",
                                  "/" + "d" * 300 + "/config.json", "~" + "u" * 300 + "/config.json",
                                  "~no_such_user_xyz/config.json", "bad\x00name"],
                         ids=["256", "5000", "org-300", "json-300", "abs-300", "tilde-300", "tilde-user", "nul"])
def test_unusable_model_names_are_one_line(capsys, name):
    line = run_error(capsys, "estimate", "--model", name)
    assert "unknown model" in line or "no such file or folder" in line
    assert len(line) < 400  # a 5000-character name is shortened, not echoed whole


def test_long_model_name_is_an_unknown_model(capsys):
    line = run_error(capsys, "estimate", "--model", "a" * 300)
    assert line.startswith("error: unknown model 'aaa") and "(300 characters)" in line


def test_long_gpu_name_is_quick_and_short(capsys):
    start = time.perf_counter()
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "g" * 100_000)
    assert "unknown GPU" in line and len(line) < 2000
    assert time.perf_counter() - start < 1.0


# --- 2. every numeric option has a range ---------------------------------------------------------

INT_OPTIONS = ["--batch-size", "--seq-len", "--lora-r", "--lora-alpha", "--num-gpus", "--dataset-tokens"]
FLOAT_OPTIONS = ["--epochs", "--lora-dropout", "--gpu-memory-gib", "--price-per-hour", "--electricity-price"]


@pytest.mark.parametrize("option", INT_OPTIONS)
@pytest.mark.parametrize("value", [HUGE, "-" + HUGE, str(2**64)])
def test_huge_integers_are_refused_with_the_range(capsys, option, value):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", f"{option}={value}")
    assert option in line and "whole number from" in line
    assert HUGE not in line  # "a 400-digit number", not the number


@pytest.mark.parametrize("option", FLOAT_OPTIONS)
@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-1e300"])
def test_huge_floats_are_refused_with_the_range(capsys, option, value):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", "80", f"{option}={value}")
    assert option in line and "a number" in line


@pytest.mark.parametrize("command", [["estimate", "--model", MODEL], ["table"]])
def test_table_and_estimate_check_ranges_too(capsys, command):
    assert "--seq-len" in run_error(capsys, *command, "--seq-len", HUGE)
    assert "--epochs" in run_error(capsys, *command, "--epochs", "1e300")


def test_ranges_are_stated():
    assert BOUNDS["seq_len"].describe() == "a whole number from 1 to 16777216 (2**24 tokens)"
    assert BOUNDS["batch_size"].high == 2**16
    assert BOUNDS["price_per_hour"].describe(with_why=False) == "a number >= 0 and < 1e6"
    with pytest.raises(PlannerError, match="--seq-len must be a whole number from 1 to 16777216"):
        TrainSetup(seq_len=2**24 + 1)


def test_the_largest_accepted_values_give_finite_strict_json(capsys):
    doc = strict_json(run_ok(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", str(2**20),
                             "--seq-len", str(2**24), "--batch-size", str(2**16), "--num-gpus", str(2**16),
                             "--sharding", "fsdp", "--epochs", "1e6", "--dataset-tokens", str(10**15),
                             "--price-per-hour", "999999", "--json"))
    assert doc["options"]


# --- 4. --json is strict JSON -------------------------------------------------------------------

def test_print_json_turns_non_finite_numbers_into_null(capsys):
    cli.print_json({"a": float("inf"), "b": [1.5, float("nan"), {"c": float("-inf")}], "d": (2,)})
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2]}


def test_huge_epochs_no_longer_print_infinity(capsys):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--dataset-tokens",
                     "1000000", "--epochs", "1e308", "--json")
    assert "--epochs" in line


# --- 6. LoRA rank at most the model's width -------------------------------------------------------

def test_lora_rank_above_hidden_size(capsys):
    line = run_error(capsys, "estimate", "--model", MODEL, "--lora-r", "8192")
    assert line == ("error: --lora-r 8192 exceeds the model's hidden size 4096; "
                    "LoRA rank must be at most the layer width")
    run_ok(capsys, "estimate", "--model", MODEL, "--lora-r", "4096")
    run_ok(capsys, "estimate", "--model", MODEL, "--method", "full", "--lora-r", "8192")  # no adapters


def test_lora_rank_in_recommend(capsys):
    assert "hidden size 4096" in run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090",
                                            "--lora-r", "8192")


def test_lora_rank_is_checked_by_the_shared_estimator():
    """The GUI's Plan page calls planner.memory.estimate: it gets the same PlannerError."""
    with pytest.raises(PlannerError, match="exceeds the model's hidden size 4096"):
        estimate(resolve_model(MODEL), TrainSetup(method="qlora", lora_r=5000))


@pytest.mark.parametrize("rank, needle", [("100000", "--lora-r must be a whole number from 1 to 65536"),
                                          ("8192", "exceeds the model's hidden size 4096")])
def test_simulate_refuses_a_wide_rank_before_building_anything(capsys, monkeypatch, rank, needle):
    import planner.simulate

    def build(*args, **kwargs):
        raise AssertionError("simulate built a model for a rank it must refuse")

    monkeypatch.setattr(planner.simulate, "run_step", build)
    start = time.perf_counter()
    assert needle in run_error(capsys, "simulate", "--model", MODEL, "--lora-r", rank)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(PlannerError, match="hidden size"):
        planner.simulate.simulate(resolve_model(MODEL), TrainSetup(lora_r=8192))


# --- found by the fuzz (tests/test_cli_fuzz.py) ---------------------------------------------------

@pytest.mark.parametrize("argv, needle", [(["--method", "qlora", "--quant", "fp4"], "--quant int8, nf4, not fp4"),
                                          (["--method", "qlora", "--quant", "2bit"], "not 2bit")])
def test_recommend_with_a_base_it_does_not_compare(capsys, argv, needle):
    """Was: ValueError: min() arg is an empty sequence (no option to recommend from)."""
    assert needle in run_error(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", "80", *argv)


def test_recommend_with_an_empty_method_uses_the_default(capsys):
    assert strict_json(run_ok(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", "80", "--method=",
                              "--json"))["options"]
