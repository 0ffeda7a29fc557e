"""The model card every export writes: README.md and loss.svg (trainer/model_card.py, issue 18)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_inprocess, write_config

from trainer.export import EXPORT_MARKER
from trainer.export import main as export_main
from trainer.loss_figure import loss_svg, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def run_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("card") / "run"
    code, events = run_inprocess(write_config(demo_dir, out, max_steps=12, val_split=0.1, eval_steps=4,
                                              save_steps=0))
    assert code == 0, events[-1]
    yield out
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exports(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("card-exports")
    assert export_main(str(run_dir), str(root / "adapter")) == 0
    assert export_main(str(run_dir), str(root / "merged"), merge=True) == 0
    return {"adapter": root / "adapter", "merged": root / "merged"}


def _svg_lines(path: Path) -> list[list[tuple[float, float]]]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg" and root.get("version") == "1.1"
    return [[tuple(map(float, p.split(","))) for p in line.get("points").split()]
            for line in root.iter(f"{SVG}polyline") if line.get("stroke") != "black"]


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_both_exports_carry_a_card_and_a_loss_figure(exports, run_dir, kind):
    out = exports[kind]
    card = (out / "README.md").read_text()
    summary = json.loads((run_dir / "run.json").read_text())
    assert "| method | qlora |" in card and "r 16, alpha 32" in card and "| max_seq_len | 64 |" in card
    assert "`data.jsonl`" in card and "| format | messages (as the trainer read it) |" in card
    assert "| examples | 2000 rows read |" in card and "| steps | 12 trained of 12 planned |" in card
    assert "![loss](loss.svg)" in card
    measured = f"{summary['peak_alloc_bytes'] / 2**20:.2f} MiB ({summary['peak_alloc_phase']})"
    assert f"| measured peak allocated | {measured} |" in card
    assert f"| predicted at that batch | {summary['predicted_at_peak_bytes'] / 2**20:.2f} MiB" in card
    assert f"| measured / predicted | {summary['peak_ratio']:.3f} |" in card
    assert "CPU live tensor bytes" in card
    train, evals = _svg_lines(out / "loss.svg")
    assert len(train) == 12 and len(evals) == 3  # steps 1-12; evaluations at 4, 8 and 12
    assert train[-1][1] > train[0][1], "the loss falls, so its line goes down the page (SVG's y grows downwards)"
    assert (out / EXPORT_MARKER).is_file()
    if kind == "adapter":
        assert "library_name: peft" in card and "adapter only" in card
        cfg = json.loads((run_dir / "config.json").read_text())
        assert f"AutoModelForCausalLM.from_pretrained({cfg['model']!r}), {str(out)!r})" in card
        assert "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4'" in card
    else:
        assert "library_name: transformers" in card and "merged into the base weights" in card
        assert f"model = AutoModelForCausalLM.from_pretrained({str(out)!r})" in card
        assert "PeftModel" not in card


def test_the_adapter_export_loads_as_its_card_says(exports, run_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = json.loads((run_dir / "config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(exports["adapter"])).eval()
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[5, 17, 42, 99]])).logits.isfinite().all()


def test_force_replaces_the_export_and_its_card(exports, run_dir):
    out = exports["adapter"]
    assert export_main(str(run_dir), str(out)) == 2  # a previous export: only with --force
    (out / "README.md").write_text("stale")
    assert export_main(str(run_dir), str(out), force=True) == 0
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: peft")


def test_what_the_run_did_not_record_is_said(run_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "run.json").unlink()
    (bare / "metrics.jsonl").write_text("")
    assert export_main(str(bare), str(tmp_path / "out")) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| examples | not recorded |" in card and "| measured peak allocated | not recorded |" in card
    assert "no training step recorded" in card and not (tmp_path / "out" / "loss.svg").exists()
    assert "`data.jsonl`" in card  # the config still names the dataset


def test_the_figure_on_its_own():
    assert nice_ticks(0.3, 6.8) == [0, 2, 4, 6, 8]
    assert nice_ticks(1, 40) == [0, 10, 20, 30, 40]
    many = [(s, 5.0 / s) for s in range(1, 10001)]
    root = ET.fromstring(loss_svg([("train loss", many), ("eval loss", [(5000, 0.01)])]).split("\n", 1)[1])
    lines = [p for p in root.iter(f"{SVG}polyline") if p.get("stroke") != "black"]
    assert len(lines[0].get("points").split()) <= 2001 and len(lines[1].get("points").split()) == 1
    assert {t.text for t in root.iter(f"{SVG}text")} >= {"train loss", "eval loss", "step", "loss"}
    with pytest.raises(ValueError):
        loss_svg([("train loss", [])])


def test_a_full_fine_tune_card_loads_a_plain_model():
    from trainer.config import TrainConfig
    from trainer.model_card import History, card_text

    cfg = TrainConfig(model="org/some-model", dataset="data/chat.jsonl", method="full", precision="bf16")
    card = card_text("full", cfg, {}, History(), "out/full", "runs/x/model", figure=False)
    assert 'base_model: "org/some-model"' in card and "library_name: transformers" in card
    assert "AutoModelForCausalLM.from_pretrained('out/full')" in card and "LoRA" not in card
    assert "| method | full |" in card and "| precision | bf16 |" in card and "`chat.jsonl`" in card
    assert "| what was measured | not recorded |" in card


@pytest.mark.parametrize(("fields", "name"), [
    (dict(method="qlora"), "QLoRA"), (dict(method="lora", use_dora=True), "DoRA"),
    (dict(method="qlora", peft="ia3"), "IA3 on a 4-bit base"),
    (dict(method="lora", peft="prompt", grad_checkpointing=False), "prompt tuning"),
    (dict(method="lora", peft="adalora", lora_r=8), "AdaLoRA"),
])
def test_the_card_names_the_adapter_the_run_trained(fields, name):
    from trainer.config import TrainConfig
    from trainer.model_card import method_name, settings_rows

    cfg = TrainConfig(model="m", dataset="d.jsonl", **fields)
    assert method_name(cfg) == name
    rows = dict(settings_rows(cfg, {}, {}))
    if fields.get("peft") == "prompt":
        assert rows["adapter"] == "prompt tuning, 20 virtual tokens" and "LoRA" not in rows
    if fields.get("peft") == "adalora":
        assert rows["AdaLoRA"].startswith("r 12 pruned to 8 on average")
