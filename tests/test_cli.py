"""The CLI contract (DESIGN.md, "CLI contract"): JSON schemas, human output, exit codes.

Most tests call ``planner.cli.main`` in-process (fast); a few run ``python -m planner`` as a
real subprocess to check exit codes and that stderr is exactly one line, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import run_error, run_json, run_ok  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "meta-llama/Llama-2-7b-hf"

BYTES_KEYS = ("weights", "quant_state", "adapters", "gradients", "optimizer", "activations", "logits",
              "workspace", "cuda_context", "allocator_slack",
              # beyond DESIGN.md's schema (an added key): a paged optimizer's state in CUDA managed memory
              "paged_optimizer")
# peak_allocated = persistent (weights..optimizer) + transient (activations, logits, workspace)
ALLOCATED_TERMS = ("weights", "quant_state", "adapters", "gradients", "optimizer", "activations", "logits",
                   "workspace")


def catalog_config(model_id: str = MODEL) -> dict:
    for path in sorted((ROOT / "resources" / "models").glob("*.json")):
        for entry in json.loads(path.read_text())["entries"]:
            if entry["id"] == model_id:
                return entry["config"]
    raise LookupError(model_id)


def run_subprocess(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


# --- estimate --json -----------------------------------------------------------------------------

def check_estimate_schema(data: dict, consistent: bool = True) -> None:
    """``consistent=False``: params.total comes from a checkpoint that need not match config.json."""
    assert set(data) >= {"model", "params", "bytes", "peak_allocated_bytes", "peak_reserved_bytes",
                         "device_used_bytes", "assumptions"}
    assert isinstance(data["model"], str) and data["model"]
    assert set(data["params"]) == {"total", "trainable"}
    for value in data["params"].values():
        assert type(value) is int and value >= 0
    assert data["params"]["trainable"] > 0
    if consistent:
        assert data["params"]["trainable"] <= data["params"]["total"]
    assert set(data["bytes"]) == set(BYTES_KEYS)
    for key, value in data["bytes"].items():
        assert type(value) is int and value >= 0, key
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes"):
        assert type(data[key]) is int and data[key] > 0, key
    b = data["bytes"]
    assert data["peak_allocated_bytes"] <= data["peak_reserved_bytes"] <= data["device_used_bytes"]
    assert data["device_used_bytes"] == data["peak_reserved_bytes"] + b["cuda_context"]
    assert data["peak_reserved_bytes"] == data["peak_allocated_bytes"] + b["allocator_slack"]
    assert data["peak_allocated_bytes"] == sum(b[k] for k in ALLOCATED_TERMS)
    assert isinstance(data["assumptions"], list)
    assert all(isinstance(a, str) and a for a in data["assumptions"])


@pytest.mark.parametrize("extra", [
    [],
    ["--method", "full"],
    ["--method", "full", "--precision", "bf16-mixed", "--optimizer", "adamw_8bit"],
    ["--method", "qlora"],
    ["--method", "qlora", "--quant", "int8", "--no-double-quant"],
    ["--method", "lora", "--lora-targets", "q_proj,v_proj", "--modules-to-save", "embed_tokens,lm_head"],
    ["--batch-size", "4", "--seq-len", "512", "--no-grad-checkpointing", "--attention", "eager"],
    ["--method", "full", "--optimizer", "sgd"],
    ["--method", "full", "--optimizer", "adafactor"],
    ["--num-gpus", "4", "--sharding", "zero3", "--offload", "optimizer", "--method", "full"],
    ["--num-gpus", "2"],
])
def test_estimate_json_schema(capsys, extra):
    data = run_json(capsys, "estimate", "--model", MODEL, *extra)
    check_estimate_schema(data)
    assert data["model"] == MODEL


def test_estimate_json_moe_model(capsys):
    data = run_json(capsys, "estimate", "--model", "mistralai/Mixtral-8x7B-v0.1", "--method", "qlora")
    check_estimate_schema(data)


def test_estimate_json_catalog_params(capsys):
    data = run_json(capsys, "estimate", "--model", MODEL, "--method", "full")
    assert data["params"]["total"] == 6_738_415_616  # the published count for Llama-2-7b
    assert data["params"]["trainable"] == data["params"]["total"]


def test_estimate_method_ordering(capsys):
    peak = {m: run_json(capsys, "estimate", "--model", MODEL, "--method", m)["peak_allocated_bytes"]
            for m in ("full", "lora", "qlora")}
    assert peak["full"] > peak["lora"] > peak["qlora"]


def test_estimate_human(capsys):
    out = run_ok(capsys, "estimate", "--model", MODEL)
    assert "peak allocated" in out
    assert "device used" in out
    assert MODEL in out


# --- bad input: exit 2, one line ----------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--seq-len", "0"], "--seq-len"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--method", "full", "--quant", "nf4"], "--quant"),
    (["--method", "lora", "--quant", "nf4"], "--quant"),
    (["--lora-targets", "nonexistent_proj"], "nonexistent_proj"),
    (["--batch-size", "abc"], "abc"),
    (["--offload", "optimizer"], "--offload"),
    (["--epochs", "0"], "--epochs"),
    (["--dataset-tokens", "-5"], "--dataset-tokens"),
    (["--no-such-option"], "--no-such-option"),
    (["--method", "dpo"], "--method"),
    (["--precision", "int4"], "--precision"),
    (["--lora-r", "0"], "--lora-r"),
    (["--num-gpus", "0"], "--num-gpus"),
    (["--modules-to-save", "mlp"], "--modules-to-save"),
    (["--lora-targets", ","], "--lora-targets"),
])
def test_estimate_bad_option(capsys, argv, needle):
    line = run_error(capsys, "estimate", "--model", MODEL, *argv)
    assert needle in line


@pytest.mark.parametrize("name, expected", [
    ("Llama-2-7b", "meta-llama/Llama-2-7b-hf"),
    ("mistral-7b", "mistralai/Mistral-7B-v0.1"),
    ("meta-llama/Llama-2-7b", "meta-llama/Llama-2-7b-hf"),
])
def test_unknown_model_suggests(capsys, name, expected):
    line = run_error(capsys, "estimate", "--model", name)
    assert f"'{name}'" in line
    assert "did you mean" in line
    assert expected in line


def test_catalog_lookup_is_case_insensitive(capsys):
    data = run_json(capsys, "estimate", "--model", "llama-2-7b-hf")
    assert data["model"] == MODEL


def test_missing_model_option(capsys):
    line = run_error(capsys, "estimate")
    assert "--model" in line


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    (json.dumps({k: v for k, v in catalog_config().items() if k != "hidden_size"}), "hidden_size"),
    (json.dumps({**catalog_config(), "hidden_size": "4096"}), "hidden_size"),
    ("", "not valid JSON"),
], ids=["malformed", "list", "no-hidden-size", "string-hidden-size", "empty"])
def test_bad_config_file(capsys, tmp_path, content, needle):
    path = tmp_path / "config.json"
    path.write_text(content)
    line = run_error(capsys, "estimate", "--model", str(path))
    assert needle in line


def test_config_file_not_utf8(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    run_error(capsys, "estimate", "--model", str(path))


@pytest.mark.parametrize("name", ["/nonexistent/config.json", "./no_such_dir/", "~/no_such_dir_xyz/config.json"])
def test_nonexistent_path(capsys, name):
    line = run_error(capsys, "estimate", "--model", name)
    assert name in line


def test_folder_without_config(capsys, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    line = run_error(capsys, "estimate", "--model", str(tmp_path))
    assert "config.json" in line


def test_folder_with_corrupt_safetensors(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(catalog_config()))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    line = run_error(capsys, "estimate", "--model", str(tmp_path))
    assert "model.safetensors" in line


def test_unknown_subcommand(capsys):
    run_error(capsys, "frobnicate")


@pytest.mark.parametrize("argv", [
    ["table", "--batch-size", "0"],
    ["table", "--model", MODEL],  # table has no --model
    ["gpus", "--bogus"],
])
def test_other_commands_bad_option(capsys, argv):
    run_error(capsys, *argv)


# --- --model as a config.json or a model folder ------------------------------------------------------

def test_config_json_matches_catalog(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(catalog_config()))
    from_file = run_json(capsys, "estimate", "--model", str(path))
    from_id = run_json(capsys, "estimate", "--model", MODEL)
    check_estimate_schema(from_file)
    assert from_file["params"] == from_id["params"]
    assert from_file["peak_allocated_bytes"] == from_id["peak_allocated_bytes"]


def test_folder_without_weights_counts_from_config(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(catalog_config()))
    data = run_json(capsys, "estimate", "--model", str(tmp_path))
    assert data["params"]["total"] == run_json(capsys, "estimate", "--model", MODEL)["params"]["total"]


def test_folder_with_safetensors_counts_tensors(capsys, tmp_path):
    from safetensors.numpy import save_file

    tensors = {
        "model.embed_tokens.weight": np.zeros((64, 16), dtype=np.float16),
        "model.layers.0.self_attn.q_proj.weight": np.zeros((16, 16), dtype=np.float16),
        "model.layers.0.mlp.up_proj.weight": np.zeros((48, 16), dtype=np.float32),
        "model.norm.weight": np.ones((16,), dtype=np.float16),
        "lm_head.weight": np.zeros((64, 16), dtype=np.float16),
    }
    (tmp_path / "config.json").write_text(json.dumps(catalog_config()))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    data = run_json(capsys, "estimate", "--model", str(tmp_path))
    check_estimate_schema(data, consistent=False)  # a toy checkpoint under a 7B config.json
    assert data["params"]["total"] == sum(t.size for t in tensors.values())


# --- table --------------------------------------------------------------------------------------------

# --- gpus ---------------------------------------------------------------------------------------------

def test_gpus_json(capsys):
    data = run_json(capsys, "gpus")
    assert isinstance(data["gpus"], list)
    assert "reason" in data
    if not data["gpus"]:  # this machine: no NVIDIA GPU
        assert isinstance(data["reason"], str) and data["reason"]


def test_gpus_human(capsys):
    out = run_ok(capsys, "gpus")
    assert out.strip()


# --- real subprocesses: exit codes and stderr -----------------------------------------------------

def test_subprocess_estimate_json():
    proc = run_subprocess("estimate", "--model", MODEL, "--method", "qlora", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    check_estimate_schema(json.loads(proc.stdout))


@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "Llama-2-7b"],
    ["estimate", "--model", MODEL, "--batch-size", "abc"],
    ["estimate", "--model", "/nonexistent/config.json"],
])
def test_subprocess_error_is_one_line(argv):
    proc = run_subprocess(*argv)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")


def test_subprocess_gpus_json():
    proc = run_subprocess("gpus", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data["gpus"], list) and "reason" in data


# --- regressions: bugs found and fixed ---------------------------------------------------------

@pytest.mark.parametrize("argv", [["frobnicate"], ["estimate", "--model", MODEL, "--no-such-option"]])
def test_usage_hint_names_a_real_command(capsys, argv):
    line = run_error(capsys, *argv)
    assert "planner planner" not in line


@pytest.mark.parametrize("fields", [
    {"max_position_embeddings": "4096"},
    {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2, "decoder_sparse_step": "x"},
    {"model_type": "qwen2_moe", "num_experts": 8, "num_experts_per_tok": 2, "mlp_only_layers": 3},
], ids=["max-pos-str", "sparse-step-str", "mlp-only-int"])
def test_bad_config_values_exit_2(capsys, tmp_path, fields):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**catalog_config(), **fields}))
    run_error(capsys, "estimate", "--model", str(path), "--seq-len", "8192")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_epochs_must_be_finite(capsys, value):
    run_error(capsys, "estimate", "--model", MODEL, "--epochs", value)


def test_closed_stdout_is_not_a_traceback():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # like `python -m planner ... | true`
    try:
        proc = subprocess.run([sys.executable, "-m", "planner", "estimate", "--model", MODEL, "--json"],
                              cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr


def test_every_memory_saver_is_an_option_of_each_planning_command_and_in_the_json(capsys):
    """Issue 15: estimate, recommend and table take the savers; --json says which are on."""
    from planner.cli import main

    flags = ["--loss", "chunked", "--no-kbit-upcast", "--offload-activations"]
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--method", "qlora", *flags, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["memory_savers"] == {"loss": "chunked", "kbit_upcast": False, "offload_activations": True,
                                    "optimizer_in_backward": False}
    assert doc["host_bytes"] == 32 * 2048 * 4096 * 2
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--optimizer-in-backward", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["memory_savers"]["optimizer_in_backward"] and doc["bytes"]["gradients"] < 2**30
    assert main(["table", "--optimizer-in-backward", *flags]) == 0
    assert "optimizer in backward (Full rows)" in capsys.readouterr().out
    assert main(["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--offload-activations",
                 "--json"]) == 0
    options = json.loads(capsys.readouterr().out)["options"]
    assert {o["offload_activations"] for o in options if o["grad_checkpointing"]} == {True}
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--offload-activations",
                 "--no-grad-checkpointing"]) == 2
    assert "needs --grad-checkpointing" in capsys.readouterr().err
