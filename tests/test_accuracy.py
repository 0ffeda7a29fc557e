"""planner.accuracy: the planner's own accuracy on finished runs, and the runs as measurements.csv rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from clitools import run_error, run_json, run_ok
from runtools import GiB, MiB, finished_run

from planner.accuracy import CSV_COLUMNS, accuracy, error, rows_csv, summary_line, write_csv
from planner.errors import PlannerError
from planner.runs import read_run, scan_runs

REFERENCE = Path(__file__).resolve().parents[1] / "resources" / "reference" / "measurements.csv"


@pytest.fixture
def runs_root(tmp_path):
    """Five measured runs, hand-computed errors (predicted / measured - 1), and four that do not count."""
    root = tmp_path / "runs"
    finished_run(root, "full-a", "full", measured=2 * GiB, predicted=int(2.2 * GiB))             # +10%
    finished_run(root, "lora-a", "lora", measured=GiB, predicted=int(0.95 * GiB))               # -5%
    finished_run(root, "lora-b", "lora", measured=4 * GiB, predicted=3 * GiB)                   # -25%
    finished_run(root, "qlora-a", "qlora", measured=GiB, predicted=int(1.02 * GiB))             # +2%
    finished_run(root, "qlora-b", "qlora", measured=GiB, predicted=int(1.01 * GiB), status="stopped")  # +1%
    finished_run(root, "failed", "lora", measured=GiB, predicted=9 * GiB, status="failed")
    finished_run(root, "cancelled", "lora", measured=GiB, predicted=9 * GiB, status="cancelled")
    finished_run(root, "no-prediction", "full", measured=GiB, predicted=None)
    finished_run(root, "killed", "full", measured=GiB, predicted=9 * GiB, summary=False)  # orphaned
    return root


def test_error_is_predicted_over_measured_minus_one(tmp_path):
    s = read_run(finished_run(tmp_path, "r", measured=2 * GiB, predicted=3 * GiB))
    assert error(s) == pytest.approx(0.5)
    assert s.ratio == pytest.approx(2 / 3)  # the table's ratio is measured / predicted


def test_summary_numbers_on_a_hand_computed_set(runs_root):
    a = accuracy(scan_runs(runs_root))
    assert a["all"].count == 5
    assert a["all"].median_abs_error == pytest.approx(0.05, abs=1e-6)
    assert a["all"].worst_error == pytest.approx(-0.25) and a["all"].worst_run == "lora-b"
    assert (a["full"].count, a["lora"].count, a["qlora"].count) == (1, 2, 2)
    assert a["full"].median_abs_error == pytest.approx(0.10, abs=1e-6)
    assert a["lora"].median_abs_error == pytest.approx(0.15, abs=1e-6)
    assert a["qlora"].median_abs_error == pytest.approx(0.015, abs=1e-6)
    assert a["qlora"].worst_error == pytest.approx(0.02, abs=1e-6)
    assert summary_line(scan_runs(runs_root)) == (
        "Your runs: 5 with measurements \u00b7 median |error| 5.0% \u00b7 worst -25.0% (LoRA)")


def test_no_runs_no_numbers(tmp_path):
    a = accuracy([])
    assert a["all"].count == 0 and a["all"].median_abs_error is None and a["lora"].worst_error is None
    assert "none finished" in summary_line([])


def test_a_cpu_run_is_judged_by_its_tensors_not_its_rss(tmp_path):
    """Big RSS (the Python process), small tensors: the tensor peak is what the prediction describes."""
    s = read_run(finished_run(tmp_path, "cpu", measured=40 * MiB, predicted=50 * MiB, device="cpu", rss=900 * MiB,
                              phase="backward"))
    assert s.ratio == pytest.approx(0.8) and s.peak_alloc_phase == "backward" and s.device == "cpu"
    assert error(s) == pytest.approx(0.25)


def _reference_header() -> list[str]:
    lines = [line for line in REFERENCE.read_text().splitlines() if line and not line.startswith("#")]
    return next(csv.reader(lines[:1]))


def test_csv_has_exactly_the_reference_columns_and_a_runs_settings(tmp_path):
    finished_run(tmp_path, "q", "qlora", measured=3 * GiB, predicted=int(3.3 * GiB), lora_r=64,
                 lora_targets=["q_proj", "v_proj"], batch_size=2, max_seq_len=512, grad_checkpointing=False,
                 double_quant=False, attention="eager", gpu="NVIDIA A100-SXM4-80GB")
    finished_run(tmp_path, "cpu", "full", measured=40 * MiB, predicted=50 * MiB, device="cpu", phase="backward")
    text = rows_csv(scan_runs(tmp_path))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(CSV_COLUMNS) == _reference_header() == text.splitlines()[0].split(",")
    by_id = {r["id"]: r for r in rows}
    q = by_id["q"]
    assert q == {**q, "source": "finetune-planner run q", "framework": "hf+peft", "model": "demo/tiny",
                 "method": "qlora", "quant": "nf4", "double_quant": "off", "precision": "bf16",
                 "adapter_dtype": "fp32", "optimizer": "adamw_torch", "batch_size": "2", "seq_len": "512",
                 "grad_checkpointing": "off", "attention": "eager", "lora_r": "64", "lora_targets": "q_proj,v_proj",
                 "modules_to_save": "", "num_gpus": "1", "sharding": "none", "offload": "none",
                 "kind": "allocated", "value": "3.0000", "unit": "GiB", "gpu": "NVIDIA A100-SXM4-80GB"}
    cpu = by_id["cpu"]
    assert (cpu["kind"], cpu["gpu"], cpu["value"]) == ("allocated", "cpu", "0.0391")
    assert cpu["quant"] == cpu["lora_r"] == ""
    assert "CPU run" in cpu["notes"] and "live tensor bytes" in cpu["notes"] and "backward" in cpu["notes"]


def test_write_csv_refuses_to_overwrite_unless_forced(tmp_path):
    finished_run(tmp_path / "runs", "r")
    runs = scan_runs(tmp_path / "runs")
    out = tmp_path / "mine.csv"
    assert write_csv(runs, out) == 1
    out.write_text("my own notes\n")
    with pytest.raises(PlannerError, match="exists; pass --force"):
        write_csv(runs, out)
    assert out.read_text() == "my own notes\n"
    assert write_csv(runs, out, force=True) == 1 and out.read_text().startswith("id,source,")
    with pytest.raises(PlannerError, match="folder"):
        write_csv(runs, tmp_path, force=True)


def test_cli_runs_json_has_the_accuracy(capsys, runs_root):
    doc = run_json(capsys, "runs", "--root", str(runs_root))
    assert {r["name"] for r in doc["runs"]} >= {"full-a", "lora-b", "killed"}
    acc = doc["accuracy"]
    assert acc["all"]["count"] == 5 and acc["all"]["worst_run"] == "lora-b"
    assert acc["lora"]["median_abs_error"] == pytest.approx(0.15, abs=1e-6)
    lora_b = next(r for r in doc["runs"] if r["name"] == "lora-b")
    assert lora_b["ratio"] == pytest.approx(4 / 3) and lora_b["peak_alloc_bytes"] == 4 * GiB
    assert lora_b["predicted_at_peak_bytes"] is None and lora_b["peak_batch"] is None  # packed: the plan's shape


def test_cli_runs_text_ends_with_the_summary(capsys, runs_root):
    out = run_ok(capsys, "runs", "--root", str(runs_root))
    assert "lora-b" in out and out.strip().splitlines()[-1].startswith("Your runs: 5 with measurements")


def test_cli_runs_csv_writes_and_refuses_to_overwrite(capsys, runs_root, tmp_path):
    out = tmp_path / "measured.csv"
    assert "wrote 5 row(s)" in run_ok(capsys, "runs", "--root", str(runs_root), "--csv", str(out))
    assert len(out.read_text().splitlines()) == 6
    before = out.read_text()
    line = run_error(capsys, "runs", "--root", str(runs_root), "--csv", str(out))
    assert "exists; pass --force" in line and out.read_text() == before
    run_ok(capsys, "runs", "--root", str(runs_root), "--csv", str(out), "--force")


@pytest.mark.parametrize("argv", [["--root", "FILE"], ["--force"], ["--csv"], ["--csv", "DIR"]])
def test_cli_runs_bad_input_is_one_line(capsys, argv, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    argv = [str(tmp_path / "file") if a == "FILE" else str(tmp_path) if a == "DIR" else a for a in argv]
    run_error(capsys, "runs", *argv)


def test_cli_runs_in_a_folder_not_made_yet_lists_nothing(capsys, tmp_path):
    assert "no runs in" in run_ok(capsys, "runs", "--root", str(tmp_path / "not-yet"))


def test_cli_runs_json_with_no_runs(capsys, tmp_path):
    doc = run_json(capsys, "runs", "--root", str(tmp_path))
    assert doc["runs"] == [] and doc["accuracy"]["all"]["count"] == 0
    assert json.dumps(doc)  # strict JSON
