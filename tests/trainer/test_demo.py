"""make-demo: an offline tiny Llama, tokenizer, dataset and run config that load and fit together."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from trainer.config import TrainConfig  # noqa: E402
from trainer.demo import END, make_demo  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    start = time.perf_counter()
    run_json = make_demo(out)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"make_demo took {elapsed:.1f} s"
    assert run_json == out.resolve() / "run.json"
    return out


@pytest.fixture(scope="module")
def tokenizer(demo: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo / "model")


def test_layout(demo: Path) -> None:
    model = demo / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model / name).is_file(), name
    assert not list(model.glob("*.bin")), "weights must be safetensors only"
    # atomic_dir leaves no temporary siblings behind
    assert [p.name for p in demo.parent.iterdir()] == ["demo"]


def test_dataset_is_valid_messages(demo: Path) -> None:
    lines = (demo / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 1000
    for line in lines:
        messages = json.loads(line)["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        verb, _, words = messages[0]["content"].partition(": ")
        words = words.split()
        assert 3 <= len(words) <= 5
        expected = {"reverse": words[::-1], "sort": sorted(words)}[verb]
        assert messages[1]["content"] == " ".join(expected)


def test_run_config_points_at_the_demo(demo: Path) -> None:
    cfg = TrainConfig.load(demo / "run.json")
    assert Path(cfg.model) == demo.resolve() / "model" and Path(cfg.model).is_dir()
    assert Path(cfg.dataset) == demo.resolve() / "data.jsonl" and Path(cfg.dataset).is_file()
    assert Path(cfg.output_dir) == demo.resolve() / "runs" / "demo"
    assert all(Path(p).is_absolute() for p in (cfg.model, cfg.dataset, cfg.output_dir))
    assert (cfg.method, cfg.batch_size, cfg.max_seq_len, cfg.seed) == ("qlora", 8, 64, 42)
    assert (demo / "run.json").read_text(encoding="utf-8") == cfg.to_json()


def test_model_loads(demo: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo / "model", use_safetensors=True)
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n < 20_000_000
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.num_key_value_heads < cfg.num_attention_heads  # GQA
    assert cfg.vocab_size == len(tokenizer) and not cfg.tie_word_embeddings
    assert cfg.eos_token_id == tokenizer.eos_token_id and cfg.pad_token_id == tokenizer.pad_token_id


def test_tokenizer_round_trip(tokenizer) -> None:
    text = "reverse: cat dog sun. Hello, wörld! 你好 {\"x\": 1}\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer("reverse: cat dog sun", add_special_tokens=False)["input_ids"]) <= 6  # words merged
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {"<|bos|>", END, "<|pad|>"}


def test_chat_template_and_assistant_mask(demo: Path, tokenizer) -> None:
    first = json.loads((demo / "data.jsonl").read_text(encoding="utf-8").splitlines()[0])["messages"]
    messages = [{"role": "system", "content": "be brief"}, *first]
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert len(ids) == len(mask) <= 64
    marked = [i for i, m in zip(ids, mask) if m]
    # exactly the reply and its end marker, one contiguous run
    assert tokenizer.decode(marked) == first[1]["content"] + END
    start = mask.index(1)
    assert mask[start:start + len(marked)] == [1] * len(marked)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (f"<|bos|><|system|>\nbe brief{END}\n<|user|>\n{first[0]['content']}{END}\n"
                    f"<|assistant|>\n{first[1]['content']}{END}\n")
    prompt = tokenizer.apply_chat_template(first[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|bos|><|user|>\n{first[0]['content']}{END}\n<|assistant|>\n"


def test_every_example_fits(demo: Path, tokenizer) -> None:
    for line in (demo / "data.jsonl").read_text(encoding="utf-8").splitlines()[:300]:
        ids = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert len(ids) <= 64


def test_make_demo_twice_replaces_its_own_unedited_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.__main__ import main

    out = tmp_path / "demo"
    make_demo(out)
    (out / "runs" / "old").mkdir(parents=True)
    (out / "runs" / "old" / "metrics.jsonl").write_text("a run the user made")
    first = (out / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["make-demo", "--out", str(out)]) == 0  # the CLI path, into the existing folder
    captured = capsys.readouterr()
    assert captured.out == f"{out.resolve() / 'run.json'}\n"  # stdout: only the result
    assert "make-demo:" in captured.err  # progress goes to stderr
    assert (out / "runs" / "old" / "metrics.jsonl").read_text() == "a run the user made"  # runs are kept
    assert (out / "model" / "model.safetensors").read_bytes() == first  # fixed seed: same weights
    assert TrainConfig.load(out / "run.json").model == str(out.resolve() / "model")

    (out / "model" / "notes.txt").write_text("mine")  # the user put a file in the demo's model folder
    assert main(["make-demo", "--out", str(out)]) == 2
    assert "model/notes.txt changed since make-demo wrote it" in capsys.readouterr().err
    assert (out / "model" / "notes.txt").read_text() == "mine"
    assert main(["make-demo", "--out", str(out), "--force"]) == 0  # asked for: the model folder is replaced whole
    assert not (out / "model" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert sorted(p.name for p in out.iterdir()) == [".finetune-demo.json", "data.jsonl", "model", "run.json", "runs"]


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_precise_mode_on_the_demo_model_matches_its_real_step(demo: Path, method: str) -> None:
    """The model the trainer trains here, all four layers: the meta-device step allocates what
    the same step on real CPU tensors does (torch's CPU autocast replayed on the meta side)."""
    from planner.autocast_policy import CPU
    from planner.options import TrainSetup
    from planner.simulate import PHASES, run_step

    config = json.loads((demo / "model" / "config.json").read_text())
    setup = TrainSetup(method=method, precision="bf16", batch_size=4, seq_len=64)
    layers = config["num_hidden_layers"]
    meta = run_step(config, layers, setup, "meta", policy=CPU)
    real = run_step(config, layers, setup, "cpu")
    for phase in PHASES:
        assert meta[phase] == pytest.approx(real[phase], rel=0.01), phase
