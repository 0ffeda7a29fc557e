"""`python -m planner recommend` (DESIGN.md, "CLI contract" and the `recommend --json` schema).

In-process through ``planner.cli.main`` with capsys: exit code, stdout, and exactly one
``error:`` line on stderr for bad input.
"""

from __future__ import annotations

import pytest
from clitools import run_error, run_json, run_ok  # noqa: E402

from planner.catalog.gpus import find_gpu
from planner.options import METHODS, OPTIMIZERS
from planner.units import GiB, MiB

MODEL = "meta-llama/Llama-3.1-8B"

GPU_KEYS = {"name": str, "memory_bytes": int, "count": int, "source": str}
OPTION_KEYS = {
    "method": str, "quant": (str, type(None)), "optimizer": str, "batch_size": int, "seq_len": int,
    "grad_checkpointing": bool, "peak_allocated_bytes": int, "device_used_bytes": int, "fits": bool,
    "headroom_bytes": int, "max_batch_size": int, "max_seq_len": int, "tokens_per_second": float,
    "hours": float, "energy_kwh": float, "cost_usd": (float, type(None)),
    # beyond DESIGN.md's schema (added keys only, as in `estimate --json`): the memory savers an
    # option uses (issue 15) and the host RAM they need, so "Use this plan" and scripts see them
    "host_bytes": int, "loss": str, "kbit_upcast": bool, "offload_activations": bool, "optimizer_in_backward": bool,
    # and the accumulation that keeps the asked batch at a smaller micro-batch (issue 16)
    "gradient_accumulation_steps": int,
    # and where an optimizer step's time goes, each term's share (issue 19)
    "step_time_shares": dict,
    # and what the micro-batch computes: packed, or padded to its longest example (--data), and
    # the share of the computed positions that are the data's own tokens
    "packing": bool, "computed_seq_len": int, "data_share": float,
}
TOP_KEYS = {"gpu", "options", "recommended", "explanation", "alternatives"}


def _is(value, types) -> bool:
    """isinstance, except that a bool is not an int and an int is not a float (JSON keeps them apart)."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types
    return isinstance(value, types)


def check_schema(doc: dict, source: str) -> None:
    assert set(doc) == TOP_KEYS
    gpu = doc["gpu"]
    assert set(gpu) == set(GPU_KEYS)
    for key, typ in GPU_KEYS.items():
        assert _is(gpu[key], typ), (key, gpu[key])
    assert gpu["source"] == source
    assert gpu["memory_bytes"] > 0 and gpu["count"] >= 1
    assert isinstance(doc["options"], list) and doc["options"]
    for o in doc["options"]:
        assert set(o) == set(OPTION_KEYS), set(o) ^ set(OPTION_KEYS)
        for key, typ in OPTION_KEYS.items():
            assert _is(o[key], typ), (key, o[key])
        assert o["method"] in METHODS and o["optimizer"] in OPTIMIZERS
        assert (o["quant"] is None) == (o["method"] != "qlora")
        assert o["fits"] == (o["device_used_bytes"] <= gpu["memory_bytes"])
        assert o["headroom_bytes"] == gpu["memory_bytes"] - o["device_used_bytes"]
    rec = doc["recommended"]
    assert rec is None or (_is(rec, int) and 0 <= rec < len(doc["options"]))
    if rec is not None:
        assert doc["options"][rec]["fits"]
    assert isinstance(doc["explanation"], str) and doc["explanation"]
    assert isinstance(doc["alternatives"], list) and all(isinstance(a, str) for a in doc["alternatives"])


# ------------------------------------------------------------------ --json schema


def test_json_matches_the_design_schema(capsys):
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--dataset-tokens", "10000000")
    check_schema(doc, "catalog")
    # the total the driver reports (nvidia-smi 24,564 MiB), not "24 GB" read as GiB
    assert doc["gpu"] == {"name": "RTX 4090", "memory_bytes": 24564 * MiB, "count": 1, "source": "catalog"}
    assert {o["method"] for o in doc["options"]} == set(METHODS)
    best = doc["options"][doc["recommended"]]
    assert best["method"] == "lora" and best["grad_checkpointing"] is True
    assert best["cost_usd"] is not None  # the catalog has an RTX 4090 price
    assert doc["alternatives"] == []
    shares = best["step_time_shares"]
    assert list(shares)[:2] == ["matmuls", "memory-bound kernels"]
    assert sum(shares.values()) == pytest.approx(1, abs=1e-3)


def test_json_schema_without_dataset_tokens(capsys):
    """Without a data set size the figures are rates per million tokens, still numbers."""
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090")
    check_schema(doc, "catalog")
    assert "per 1,000,000 tokens" in doc["explanation"] or doc["recommended"] is None


def test_json_when_nothing_fits(capsys):
    doc = run_json(capsys, "recommend", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "RTX 4090",
                   "--dataset-tokens", "1000000")
    check_schema(doc, "catalog")
    assert doc["recommended"] is None
    assert not any(o["fits"] for o in doc["options"])
    assert any("x RTX 4090 with FSDP" in a for a in doc["alternatives"]), doc["alternatives"]


def test_method_qlora_keeps_only_qlora_options(capsys):
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--method", "qlora",
                   "--dataset-tokens", "1000000")
    check_schema(doc, "catalog")
    assert {o["method"] for o in doc["options"]} == {"qlora"}
    assert {o["quant"] for o in doc["options"]} == {"nf4", "int8"}
    rec = doc["recommended"]
    assert rec is None or doc["options"][rec]["method"] == "qlora"


def test_method_qlora_recommends_a_fitting_qlora_option(capsys):
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--method", "qlora",
                   "--dataset-tokens", "1000000")
    assert any(o["fits"] for o in doc["options"])
    assert doc["recommended"] is not None
    assert "QLoRA" in doc["explanation"]


def test_custom_memory_gives_source_custom(capsys):
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", "24", "--dataset-tokens", "1000000")
    check_schema(doc, "custom")
    assert doc["gpu"]["memory_bytes"] == 24 * GiB
    assert "24" in doc["gpu"]["name"]


def test_num_gpus_is_reported(capsys):
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--num-gpus", "2",
                   "--sharding", "fsdp", "--dataset-tokens", "1000000")
    check_schema(doc, "catalog")
    assert doc["gpu"]["count"] == 2


def test_gpu_any_returns_a_ranking(capsys):
    doc = run_json(capsys, "recommend", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "any",
                   "--dataset-tokens", "10000000")
    assert set(doc) == {"ranking"}
    ranking = doc["ranking"]
    assert len(ranking) >= 3
    names = [r["name"] for r in ranking]
    assert len(names) == len(set(names))
    assert "RTX 4090" in names and "H100 SXM" in names
    for r in ranking:
        assert set(r) == set(GPU_KEYS) | {"option", "explanation"}
        assert r["source"] == "catalog"
        assert set(r["option"]) == set(OPTION_KEYS)
        assert r["option"]["fits"] is True
        assert isinstance(r["explanation"], str) and r["explanation"]
    # cheapest first among the priced ones, unpriced ones after them
    costs = [r["option"]["cost_usd"] for r in ranking]
    priced = [c for c in costs if c is not None]
    assert costs[:len(priced)] == priced == sorted(priced)


# ------------------------------------------------------------------ human output


def test_human_output_has_explanation_and_table(capsys):
    argv = ["recommend", "--model", MODEL, "--gpu", "RTX 4090", "--dataset-tokens", "1000000"]
    doc = run_json(capsys, *argv)
    out = run_ok(capsys, *argv)
    assert doc["explanation"] in out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["method", "quant"])
    for column in ("quant", "optimizer", "ckpt", "batch", "GiB", "max batch", "max seq", "tok/s", "hours"):
        assert column in header
    assert "RTX 4090" in out.splitlines()[0]
    assert any(line.startswith("*lora") for line in out.splitlines())  # the recommended row is marked


def test_human_output_lists_alternatives_when_nothing_fits(capsys):
    out = run_ok(capsys, "recommend", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "RTX 4090")
    assert "Nothing fits" in out
    assert "x RTX 4090 with FSDP" in out
    # the CPU-offload alternatives say the app's trainer cannot run them
    offload = [line for line in out.splitlines() if "CPU offload" in line]
    assert offload and all("The app cannot train this: the trainer has no CPU offload" in line for line in offload)
    assert "one RTX 4090 with CPU offload" in out  # a single GPU with offload is considered too


def test_t4_plans_against_the_15_gib_the_driver_reports(capsys):
    """Issue 13.4: a T4 has 15,360 MiB (ECC on), not 16 GiB; the QLoRA plan that needs 15.8 GiB
    (README's `recommend --gpu T4`) no longer fits."""
    doc = run_json(capsys, "recommend", "--model", MODEL, "--gpu", "T4")
    assert doc["gpu"]["memory_bytes"] == 15360 * MiB
    # with the standard loss the leanest plan needs 15.8 GiB: it fitted the old 16 GiB, not the real card
    standard = run_json(capsys, "estimate", "--model", MODEL, "--method", "qlora", "--optimizer", "paged_adamw_8bit")
    assert 15 * GiB < standard["device_used_bytes"] < 16 * GiB
    # issue 15: the recommender then tries the chunked loss, which fits with room to spare
    best = doc["options"][doc["recommended"]]
    assert best["device_used_bytes"] < 0.9 * 15 * GiB
    assert best["loss"] == "chunked" and not best["kbit_upcast"] and not best["offload_activations"]
    assert "It uses the chunked loss" in doc["explanation"] and "without them, nothing fits" in doc["explanation"]
    out = run_ok(capsys, "recommend", "--model", MODEL, "--gpu", "T4")
    assert out.splitlines()[0] == "1 x T4 (16 GB datasheet, 15 GiB usable; catalog)"
    assert "of 15 GiB per GPU" in out and "of 16.0 GiB" not in out


def test_human_recommendation_names_the_gpu_without_doubled_parentheses(capsys):
    out = run_ok(capsys, "recommend", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "RTX 4090")
    assert ") (" not in out and "))" not in out


def test_gpu_any_table_has_a_header_row(capsys):
    """Issue 13.12: the ranking printed rows with no header."""
    out = run_ok(capsys, "recommend", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "any",
                 "--dataset-tokens", "10000000")
    lines = out.splitlines()
    assert lines[0].split() == ["GPU", "datasheet", "usable", "method", "quant", "needs", "free", "tok/s", "hours",
                                "$"]
    rows = {line.split("  ")[0]: line for line in lines[1:]}
    t4 = find_gpu("T4")
    assert "16 GB" in rows["T4"] and f"{t4.memory_bytes / GiB:.2f} GiB" in rows["T4"]
    # the columns line up under the header
    assert len({line.index(" GiB") for line in lines[1:]}) == 1


# ------------------------------------------------------------------ errors: exit 2, one line


def _has_nvidia_gpu() -> bool:
    from planner.hardware import inventory

    return bool(inventory().gpus)


def test_gpu_auto_without_nvidia_gpu(capsys):
    if _has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "auto")
    assert "--gpu" in line


def test_unknown_gpu_suggests_close_names(capsys):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4099")
    assert "RTX 4099" in line
    assert "RTX 4090" in line


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_bad_gpu_memory(capsys, value):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu-memory-gib", value)
    assert "--gpu-memory-gib" in line


@pytest.mark.parametrize("value", ["-5", "0"])
def test_bad_dataset_tokens(capsys, value):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", "--dataset-tokens", value)
    assert "--dataset-tokens" in line


def test_no_gpu_given(capsys):
    line = run_error(capsys, "recommend", "--model", MODEL)
    assert "--gpu" in line and "--gpu-memory-gib" in line


def test_unknown_model(capsys):
    line = run_error(capsys, "recommend", "--model", "meta-llama/Llama-3.1-8X", "--gpu", "RTX 4090")
    assert "Llama-3.1-8B" in line


@pytest.mark.parametrize("flag", ["--price-per-hour", "--electricity-price"])
def test_negative_prices(capsys, flag):
    line = run_error(capsys, "recommend", "--model", MODEL, "--gpu", "RTX 4090", flag, "-1")
    assert flag in line


def test_data_sets_the_padding_and_the_data_set_size(capsys, demo_folder, varied_data):
    args = ("recommend", "--model", str(demo_folder / "model"), "--gpu", "RTX 4090", "--method", "lora",
            "--seq-len", "512", "--data", str(varied_data))
    doc = run_json(capsys, *args)
    by_batch = {o["batch_size"]: o for o in doc["options"]
                if o["optimizer"] == "adamw_torch" and o["grad_checkpointing"]}
    assert by_batch[1]["data_share"] > 0.99 and by_batch[16]["data_share"] < 0.5  # 16 examples pad to the longest
    assert by_batch[1]["computed_seq_len"] < by_batch[16]["computed_seq_len"] <= 512
    packed = run_json(capsys, *args, "--packing")
    assert all(o["packing"] and o["data_share"] == 1.0 and o["computed_seq_len"] == 512 for o in packed["options"])
    # hours for the data set's own tokens (cut at 512), not "per 1,000,000 tokens"
    assert "per 1,000,000 tokens" not in doc["explanation"]
    # the tiny model is host-bound: its fastest micro-batch is the largest, 72% of it padding
    picked = doc["options"][doc["recommended"]]
    assert picked["batch_size"] == 16 and picked["data_share"] < 0.5
    assert "% padding); packing would train" in doc["explanation"]


def test_bad_data_is_one_line(capsys, demo_folder, tmp_path):
    model = str(demo_folder / "model")
    err = run_error(capsys, "recommend", "--model", model, "--gpu", "RTX 4090", "--data", str(tmp_path / "none.jsonl"))
    assert "--data" in err and "no such file" in err
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    err = run_error(capsys, "recommend", "--model", model, "--gpu", "RTX 4090", "--data", str(tmp_path / "bad.jsonl"))
    assert err.startswith("error: --data: ") and "bad.jsonl" in err


def test_estimate_plans_memory_at_the_data_s_longest_example(capsys, demo_folder, varied_data):
    args = ("estimate", "--model", str(demo_folder / "model"), "--method", "lora", "--seq-len", "4096")
    plain = run_json(capsys, *args)
    data = run_json(capsys, *args, "--data", str(varied_data))
    assert data["peak_allocated_bytes"] < plain["peak_allocated_bytes"]
    assert any("longest example is" in a for a in data["assumptions"])
    packed = run_json(capsys, *args, "--data", str(varied_data), "--packing")
    assert packed["peak_allocated_bytes"] == plain["peak_allocated_bytes"]  # blocks of exactly --seq-len
