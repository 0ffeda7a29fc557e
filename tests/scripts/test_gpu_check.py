"""scripts/gpu_check.py (issue 16 point 6): its pure pieces on the CPU, its refusal without a GPU,
and (marked ``gpu``) a real check of the small demo where a CUDA GPU is visible."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from scripttools import SCRIPTS, load_script

gpu_check = load_script("gpu_check")
ROOT = SCRIPTS.parent
GiB = 1024**3
A100 = gpu_check.Gpu(0, "NVIDIA A100-SXM4-80GB", "GPU-6f0c1b52-1c3a-4e21-9d3f-0123456789ab", 80 * GiB)
ODD = gpu_check.Gpu(1, "NVIDIA Made Up 9000", "GPU-aa00bb11-0000-0000-0000-000000000000", 24 * GiB)
CONFIG = {"model": "demo/model", "method": "qlora", "grad_checkpointing": True, "batch_size": 4, "max_seq_len": 512,
          "packing": True, "lora_r": 16, "lora_targets": ["all-linear"], "modules_to_save": ["lm_head"]}


def _result(**over):
    r = gpu_check.Result(A100, "trainer-demo-small", dict(CONFIG))
    r.start = {"event": "start", "precision": "bf16", "predicted_peak_bytes": 2 * GiB,
               "predicted_reserved_bytes": 3 * GiB, "predicted_device_bytes": 4 * GiB}
    r.end = {"event": "end", "status": "completed", "steps": 4, "peak_alloc_bytes": int(1.6 * GiB),
             "peak_reserved_bytes": 3 * GiB, "peak_device_bytes": None}
    r.rates = [100.0, 900.0, 1000.0, 1100.0]
    r.predicted_tps = 1200.0
    for key, value in over.items():
        setattr(r, key, value)
    return r


def _header(name: str) -> list[str]:
    lines = [line for line in (ROOT / "resources" / "reference" / name).read_text().splitlines()
             if line and not line.startswith("#")]
    return lines[0].split(",")


def test_the_rows_use_the_calibration_files_columns():
    assert list(gpu_check.CSV_COLUMNS) == _header("measurements.csv")
    assert list(gpu_check.THROUGHPUT_COLUMNS) == _header("throughput.csv")


def test_errors_and_the_steady_rate():
    assert gpu_check.relative_error(100, 110) == pytest.approx(0.10)
    assert gpu_check.relative_error(None, 1) is None and gpu_check.relative_error(5, None) is None
    assert gpu_check.measured_tps([10.0, 900.0, 1100.0, 1000.0]) == 1000.0  # the warm-up step left out
    assert gpu_check.measured_tps([7.0]) == 7.0 and gpu_check.measured_tps([]) is None


def test_cuda_visible_devices_picks_gpus_as_cuda_does():
    gpus = [A100, ODD]
    assert gpu_check.visible(gpus, None) == gpus
    assert gpu_check.visible(gpus, "") == []
    assert gpu_check.visible(gpus, "1") == [ODD]
    assert gpu_check.visible(gpus, "GPU-aa00,0") == [ODD, A100]
    assert gpu_check.visible(gpus, "0,7,1") == [A100]  # CUDA stops at the first unknown entry


def test_nvml_names_are_matched_to_the_catalog_or_said_unknown():
    spec, note = gpu_check.catalog_gpu(A100.name, A100.memory_bytes)
    assert spec.name == "A100 80GB SXM" and note == ""
    spec, note = gpu_check.catalog_gpu(ODD.name, ODD.memory_bytes)
    assert spec is None and "not in the GPU catalog" in note


def test_events_are_read_and_a_failure_is_named():
    lines = [json.dumps({"v": 1, "event": "start", "t": 0, "precision": "bf16"}), "a stray print",
             json.dumps({"v": 1, "event": "step", "t": 1, "tokens_per_s": 512.5}),
             json.dumps({"v": 1, "event": "end", "t": 2, "status": "completed"})]
    start, end, rates, error = gpu_check.parse_events("\n".join(lines))
    assert start["precision"] == "bf16" and end["status"] == "completed" and rates == [512.5] and error is None
    oom = json.dumps({"v": 1, "event": "error", "t": 1, "type": "oom", "message": "out of memory at 9 GiB"})
    assert gpu_check.parse_events(oom)[3] == "oom: out of memory at 9 GiB"
    assert gpu_check.parse_events("")[3] == "run ended without an end event"


def test_memory_rows_one_per_kind_measured_and_readable_by_the_validator():
    rows = gpu_check.memory_rows(_result())
    assert [r["kind"] for r in rows] == ["allocated", "reserved"]  # no NVML figure: no device row
    alloc = rows[0]
    assert alloc["value"] == "1.600" and alloc["unit"] == "GiB" and alloc["gpu"] == A100.name
    assert alloc["notes"].startswith("predicted 2.000 GiB (+25.0%)")
    assert [alloc[k] for k in ("method", "quant", "grad_checkpointing", "seq_len")] == ["qlora", "nf4", "on", "512"]
    text = gpu_check.to_csv(list(gpu_check.CSV_COLUMNS), rows, "test")
    validator = load_script("validate_estimator")
    parsed = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    setup = validator.setup_of(parsed[0])
    assert (setup.method, setup.batch_size, setup.seq_len, setup.modules_to_save) == ("qlora", 4, 512, ("lm_head",))
    assert gpu_check.memory_rows(_result(error="oom: ...")) == []


def test_the_throughput_row_and_the_table():
    row = gpu_check.throughput_row(_result())
    assert row["tokens_per_s"] == "1000" and row["gpus"] == "1x " + A100.name
    assert row["notes"] == "predicted 1200 tokens/s (+20.0%)"
    note = "NVIDIA Made Up 9000 is not in the GPU catalog: no tokens/s prediction"
    unknown = _result(predicted_tps=None, gpu_note=note)
    assert "not in the GPU catalog" in gpu_check.throughput_row(unknown)["notes"]
    text = gpu_check.table([_result(), unknown, _result(error="oom: out of memory")])
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["gpu", "model", "method", "ckpt"]
    assert "1.60" in lines[1] and "2.00" in lines[1] and "+25%" in lines[1] and "+20%" in lines[1]
    assert "failed: oom: out of memory" in lines[3]
    assert lines[-1].startswith("note: NVIDIA Made Up 9000 is not in the GPU catalog")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "gpu_check.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=1800, check=False)


def test_without_a_gpu_one_line_and_exit_2(tmp_path):
    done = _run("--out-csv", str(tmp_path / "out.csv"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stderr.strip() == gpu_check.NO_GPU and done.stdout == ""
    assert not (tmp_path / "out.csv").exists()


def test_an_existing_csv_is_kept_unless_forced(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    done = _run("--out-csv", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and "exists; pass --force" in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == "mine\n"
    assert _run("--out-csv", str(out), "--force", env={"CUDA_VISIBLE_DEVICES": ""}).stderr.strip() == gpu_check.NO_GPU


@pytest.mark.gpu
@pytest.mark.slow
def test_the_small_demo_on_a_gpu_matches_the_prediction(tmp_path):
    """One configuration through the real trainer on each visible GPU: measured peak allocated
    within 10% of the planner's prediction, every kind written."""
    out = tmp_path / "check.csv"
    done = _run("--size", "small", "--methods", "qlora", "--checkpointing", "on", "--out-csv", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(line for line in out.read_text().splitlines() if not line.startswith("#")))
    kinds = {r["kind"] for r in rows}
    assert {"allocated", "reserved"} <= kinds, rows
    for row in (r for r in rows if r["kind"] == "allocated"):
        predicted = float(row["notes"].split()[1])
        assert abs(predicted - float(row["value"])) <= 0.10 * float(row["value"]), row
    speed = (out.parent / "check-throughput.csv").read_text()
    assert "tokens/s" in speed or "no prediction" in speed or "not in the GPU catalog" in speed


def test_the_prediction_pads_the_demo_s_data_as_the_run_does(demo_folder):
    """The run's tokens/s counts the examples' own tokens: the prediction times each micro-batch at
    its padded length (the data's lengths, tokenized as the run tokenizes them), or packed blocks."""
    from dataclasses import replace

    from planner.catalog import resolve_model
    from planner.cost import run_cost
    from planner.lengths import measure_lengths
    from trainer.config import TrainConfig, setup_of

    config = json.loads((demo_folder / "run.json").read_text())
    cfg = TrainConfig.from_dict(config)
    tps, name = gpu_check.predicted_tokens_per_s(config, "bf16", A100)
    setup = setup_of(cfg, "bf16")
    lengths = measure_lengths(cfg.model, cfg.dataset)
    arch, spec = resolve_model(cfg.model).arch, gpu_check.catalog_gpu(A100.name, A100.memory_bytes)[0]
    assert name == spec.name and tps == run_cost(arch, replace(setup, lengths=lengths), spec).tokens_per_second
    assert lengths.longest < cfg.max_seq_len  # the demo's examples are shorter than its cut: every row is padded
    assert tps < run_cost(arch, setup, spec).tokens_per_second  # fewer tokens a micro-batch than max_seq_len
    packed, _ = gpu_check.predicted_tokens_per_s({**config, "packing": True}, "bf16", A100)
    assert packed == run_cost(arch, replace(setup, packing=True), spec).tokens_per_second
