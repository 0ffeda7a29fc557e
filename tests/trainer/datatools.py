"""Shared pieces of the data tests: small tokenizers (with, without a chat template), file writers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from trainer.config import TrainConfig  # noqa: E402
from trainer.data import DataError  # noqa: E402

SPECIALS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|eos|>", "<|pad|>"]
GEN_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|end|>{% endgeneration %}"
    "{% else %}{{ m.content }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")
# No {% generation %}: the prefix path. A newline after each turn and EOS after the last one, so
# that the rendering of a prefix differs from the full conversation right after the reply.
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% else %}{{ eos_token }}{% endif %}")
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}")

WORDS = ("the a cat dog runs fast slow hello world what is two plus four answer question of and to in "
         "model train data token loss learn rate batch paris france capital city river blue green "
         "red one three five seven nine ten hundred please tell me about write story short long").split()


@pytest.fixture(scope="session")
def backend():
    return train_backend()


def train_backend() -> str:
    """A byte-level BPE (vocab 500) trained on a few hundred generated lines, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(400)]
    lines += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 .,?!") for _ in range(40)) for _ in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok.to_str()


def _wrap(backend_json: str, template: str | None, pad: bool = True):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kwargs = {"pad_token": "<|pad|>"} if pad else {}
    if template is not None:
        kwargs["chat_template"] = template
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(backend_json), eos_token="<|eos|>", **kwargs)


@pytest.fixture(scope="session")
def tok_gen(backend):
    return _wrap(backend, GEN_TEMPLATE)


@pytest.fixture(scope="session")
def tok_plain(backend):
    return _wrap(backend, PLAIN_TEMPLATE)


@pytest.fixture(scope="session")
def tok_none(backend):
    """No chat template and no pad token: the documented fallback layout, pad falls back to EOS."""
    return _wrap(backend, None, pad=False)


def cfg(path, **kw) -> TrainConfig:
    return TrainConfig(model="m", dataset=str(path), **kw)


def write(path: Path, rows, kind: str | None = None) -> Path:
    """Write rows as the file type given by the suffix (or ``kind``)."""
    kind = kind or path.suffix.lstrip(".")
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif kind == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif kind == "parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def runs(tok, ids, labels) -> list[str]:
    """Decoded contiguous runs of labelled tokens; labelled tokens must equal the inputs."""
    out, cur = [], []
    for i, label in zip(ids, labels):
        if label == -100:
            if cur:
                out.append(cur)
            cur = []
        else:
            assert label == i
            cur.append(i)
    if cur:
        out.append(cur)
    return [tok.decode(r) for r in out]


def error(exc_info) -> DataError:
    err = exc_info.value
    assert type(err) is DataError and isinstance(err, ValueError)
    assert "\n" not in str(err) and "\r" not in str(err)
    return err


CHAT = [{"role": "system", "content": "you are blue"},
        {"role": "user", "content": "what is two plus two"},
        {"role": "assistant", "content": "the answer is four"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hello world"}]
ROWS = {
    "alpaca": [{"instruction": "tell me about paris", "input": "short", "output": "paris is the capital"},
               {"instruction": "what is one plus one", "input": "", "output": "two"}],
    "sharegpt": [{"conversations": [{"from": "system", "value": "you are blue"},
                                    {"from": "human", "value": "tell me about paris"},
                                    {"from": "gpt", "value": "paris is the capital"}]},
                 {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "two"}]}],
    "messages": [{"messages": [{"role": "user", "content": "tell me about paris"},
                               {"role": "assistant", "content": "paris is the capital"}]},
                 {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "two"}]}],
    "text": [{"text": "paris is the capital of france"}, {"text": "two plus two is four"}],
}
CASES = [(fmt, kind) for fmt in ROWS for kind in ("jsonl", "json", "parquet")] + [("alpaca", "csv"), ("text", "csv")]


