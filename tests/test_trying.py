"""What the Try page predicts for a run or an adapter folder (planner/trying.py): the generate
session's memory as it loads it. Checked against real generate sessions in tests/gui/test_try_page.py
(within 5%) and, term by term, against real generate calls in tests/test_inference.py."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from planner.trying import predicted_bytes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trying") / "demo"
    subprocess.run([sys.executable, "-m", "trainer", "make-demo", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return out


def test_a_qlora_run_is_predicted_with_its_4_bit_base_and_grows_with_the_answer(demo, tmp_path):
    from trainer.rundir import write_marker

    run = tmp_path / "run"
    run.mkdir()
    write_marker(run)  # a run directory of this trainer, as a run leaves it
    (run / "config.json").write_text((demo / "run.json").read_text())  # the demo trains QLoRA
    before, small, large = (predicted_bytes(run, "cpu", shape) for shape in (None, (16, 16), (16, 512)))
    assert before and small and large
    assert before.peak is None and small.peak and large.peak and large.peak > small.peak
    est = small.estimate
    assert small.weights == before.weights == est.weights + est.quant_state + est.adapters
    assert small.estimate.quant_state > 0  # 4-bit base
    assert "16 + 512 tokens" in large.text and large.text.startswith("Predicted: weights")
    on_gpu = predicted_bytes(run, "cuda", (16, 16))
    assert on_gpu and on_gpu.estimate.cuda_context > 0 and small.estimate.cuda_context == 0


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def test_an_adapter_folder_is_predicted_on_its_16_or_32_bit_base(demo, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(demo / "model")}))
    _safetensors(adapter / "adapter_model.safetensors", {"a.lora_A.weight": [8, 128], "a.lora_B.weight": [128, 8]})
    p = predicted_bytes(adapter, "cpu", (8, 8))
    assert p and p.estimate.quant_state == 0 and p.estimate.adapters == 2 * 8 * 128 * 4


def test_a_prompt_tuning_adapter_adds_its_virtual_tokens_to_the_prompt(demo, tmp_path):
    """trainer/virtual_tokens.py answers a prompt- or prefix-tuning adapter with its virtual
    tokens ahead of the prompt: they join the KV cache, and no LoRA branch runs in any layer."""
    adapter = tmp_path / "prompt"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(demo / "model"),
                                                             "peft_type": "PROMPT_TUNING", "num_virtual_tokens": 20}))
    _safetensors(adapter / "adapter_model.safetensors", {"prompt_embeddings": [20, 256]})
    tuned, plain = predicted_bytes(adapter, "cpu", (8, 8)), predicted_bytes(demo / "model", "cpu", (28, 8))
    assert tuned and plain and tuned.estimate.kv_cache == plain.estimate.kv_cache
    assert tuned.estimate.adapters == 20 * 256 * 4


def test_what_cannot_be_predicted_is_none(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "nobody/unknown-model"}))
    assert predicted_bytes(tmp_path, "cpu", (4, 4)) is None
    assert predicted_bytes(tmp_path / "missing", "cpu", None) is None
