"""trainer.data / trainer.formats: files -> formats -> tokenized, masked, truncated, packed, split."""

from __future__ import annotations

import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
from datatools import (  # noqa: E402,F401
    CASES,
    CHAT,
    ROWS,
    WORDS,
    backend,
    cfg,
    error,
    runs,
    tok_gen,
    tok_none,
    tok_plain,
    write,
)

from trainer.data import DataError, PreparedData, collate, detect_format, prepare_data

# ---- detection and conversion -------------------------------------------------------------------

@pytest.mark.parametrize("columns,row,expected", [
    (["instruction", "input", "output"], {}, "alpaca"),
    (["instruction", "output"], {}, "alpaca"),
    (["conversations"], {"conversations": [{"from": "human", "value": "x"}]}, "sharegpt"),
    (["conversations"], {"conversations": [{"role": "user", "content": "x"}]}, "messages"),
    (["messages"], {"messages": [{"from": "human", "value": "x"}]}, "sharegpt"),
    (["messages", "id"], {"messages": []}, "messages"),
    (["text", "meta"], {"text": "x"}, "text"),
])
def test_detect_format(columns, row, expected):
    assert detect_format(columns, row) == expected


def test_detect_format_unknown_lists_columns_and_formats():
    with pytest.raises(DataError) as info:
        detect_format(["prompt", "completion"], {"prompt": "a", "completion": "b"})
    msg = str(error(info))
    assert "'prompt'" in msg and "'completion'" in msg
    assert all(name in msg for name in ("alpaca", "sharegpt", "messages", "text"))


@pytest.mark.parametrize("fmt,kind", CASES)
def test_each_format_and_file_type(tmp_path, tok_gen, fmt, kind):
    path = write(tmp_path / f"data.{kind}", ROWS[fmt])
    before = sorted(os.listdir(tmp_path))
    out = prepare_data(cfg(path), tok_gen)
    assert isinstance(out, PreparedData)
    assert (out.format, out.n_examples, out.n_skipped, out.n_truncated) == (fmt, 2, 0, 0)
    assert out.train.column_names == ["input_ids", "attention_mask", "labels"] and out.eval is None
    assert sorted(os.listdir(tmp_path)) == before  # nothing written next to the data
    first = out.train[0]
    if fmt == "text":
        assert (out.template, out.masking) == ("none", "none")
        assert tok_gen.decode(first["input_ids"]) == "paris is the capital of france<|eos|>"
        assert first["labels"] == first["input_ids"]
    else:
        assert (out.template, out.masking) == ("chat_template", "generation")
        assert "tell me about paris" in tok_gen.decode(first["input_ids"])
        assert runs(tok_gen, first["input_ids"], first["labels"]) == ["paris is the capital<|end|>"]
    if fmt == "alpaca":
        assert tok_gen.decode(first["input_ids"]).startswith("<|user|>tell me about paris\n\nshort<|end|>")
    if fmt == "sharegpt":
        assert tok_gen.decode(first["input_ids"]).startswith("<|system|>you are blue<|end|><|user|>")


def test_explicit_format_overrides_detection(tmp_path, tok_gen):
    path = write(tmp_path / "d.jsonl", [{"text": "hello world", "instruction": "x", "output": "y"}])
    assert prepare_data(cfg(path), tok_gen).format == "alpaca"
    assert prepare_data(cfg(path, data_format="text"), tok_gen).format == "text"
    with pytest.raises(DataError) as info:
        prepare_data(cfg(path, data_format="messages"), tok_gen)
    assert str(error(info)) == "d.jsonl line 1: messages row lacks 'messages'"


def test_json_lines_in_a_json_file_and_blank_lines(tmp_path, tok_gen):
    path = tmp_path / "d.json"
    path.write_text('{"text": "a cat"}\n\n\r\n{"text": "a dog"}\r\n', encoding="utf-8")
    assert len(prepare_data(cfg(path), tok_gen).train) == 2


def test_json_array_the_library_cannot_read_uses_the_parsed_rows(tmp_path, tok_gen):
    # leading whitespace sends datasets through pandas, which rejects the mixed-type "id" column
    rows = [{"messages": CHAT, "id": 1}, {"messages": CHAT[1:3], "id": "x"}]
    path = tmp_path / "d.json"
    path.write_text("\n  " + json.dumps(rows, indent=1), encoding="utf-8")
    out = prepare_data(cfg(path), tok_gen)
    assert (out.format, len(out.train)) == ("messages", 2)
    assert runs(tok_gen, out.train[1]["input_ids"], out.train[1]["labels"]) == ["the answer is four<|end|>"]


# ---- masking ------------------------------------------------------------------------------------

def _conv(tmp_path):
    return write(tmp_path / "c.jsonl", [{"messages": CHAT}])


def test_assistant_only_with_generation_blocks(tmp_path, tok_gen):
    out = prepare_data(cfg(_conv(tmp_path)), tok_gen)
    row = out.train[0]
    assert out.masking == "generation"
    assert runs(tok_gen, row["input_ids"], row["labels"]) == ["the answer is four<|end|>", "hello world<|end|>"]


def test_generation_mask_repaired_when_transformers_loses_a_turn(tmp_path, tok_gen):
    # transformers' char_to_token is None for the leading space (trimmed from the byte-level
    # token's offsets) and its mask then drops this turn and every later one
    chat = [CHAT[1], {"role": "assistant", "content": " hello"}, CHAT[3], CHAT[4]]
    raw = tok_gen.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    row = prepare_data(cfg(write(tmp_path / "d.jsonl", [{"messages": chat}])), tok_gen).train[0]
    assert row["input_ids"] == raw["input_ids"]
    assert runs(tok_gen, row["input_ids"], row["labels"]) == [" hello<|end|>", "hello world<|end|>"]


def test_assistant_only_by_prefix_rendering(tmp_path, tok_plain):
    out = prepare_data(cfg(_conv(tmp_path)), tok_plain)
    row = out.train[0]
    assert (out.template, out.masking) == ("chat_template", "prefix")
    assert runs(tok_plain, row["input_ids"], row["labels"]) == ["the answer is four<|end|>\n",
                                                                "hello world<|end|>\n<|eos|>"]
    assert row["input_ids"] == tok_plain.apply_chat_template(CHAT, tokenize=True, return_dict=False)


def test_prefix_masking_with_a_slow_tokenizer_matches(tmp_path, tok_plain):
    class Slow:  # no offsets: the incremental-tokenization path
        is_fast = False

        def __getattr__(self, name):
            return getattr(tok_plain, name)

        def __call__(self, *a, **kw):
            assert "return_offsets_mapping" not in kw
            return tok_plain(*a, **kw)

    fast = prepare_data(cfg(_conv(tmp_path)), tok_plain).train[0]
    slow = prepare_data(cfg(_conv(tmp_path)), Slow()).train[0]
    assert slow == fast


def test_fallback_layout_without_chat_template(tmp_path, tok_none):
    out = prepare_data(cfg(_conv(tmp_path)), tok_none)
    row = out.train[0]
    assert (out.template, out.masking) == ("fallback", "fallback")
    assert tok_none.decode(row["input_ids"]) == (
        "### System:\nyou are blue\n\n### User:\nwhat is two plus two\n\n### Assistant:\nthe answer is four<|eos|>"
        "\n\n### User:\nhello\n\n### Assistant:\nhello world<|eos|>")
    assert runs(tok_none, row["input_ids"], row["labels"]) == ["the answer is four<|eos|>", "hello world<|eos|>"]


@pytest.mark.parametrize("which", ["tok_gen", "tok_plain", "tok_none"])
def test_full_loss_when_assistant_only_is_off(tmp_path, request, which):
    row = prepare_data(cfg(_conv(tmp_path), assistant_only_loss=False), request.getfixturevalue(which)).train[0]
    assert row["labels"] == row["input_ids"]


def test_rows_without_an_answer_are_skipped_and_counted(tmp_path, tok_gen):
    rows = [{"messages": CHAT}, {"messages": CHAT[:2]}, {"messages": []},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}]
    out = prepare_data(cfg(write(tmp_path / "d.jsonl", rows)), tok_gen)
    assert (out.n_examples, out.n_skipped, len(out.train)) == (4, 3, 1)
    with pytest.raises(DataError) as info:
        prepare_data(cfg(write(tmp_path / "e.jsonl", rows[1:])), tok_gen)
    assert "no example has tokens to learn from (3 of 3 rows skipped" in str(error(info))


# ---- truncation, packing, split -----------------------------------------------------------------

def test_truncation_is_counted_and_may_skip(tmp_path, tok_gen):
    long_answer = " ".join(["seven"] * 60)
    rows = [{"instruction": "hi", "output": long_answer}, {"instruction": "hi", "output": "two"},
            {"instruction": " ".join(["hundred"] * 80), "output": "two"}]  # answer cut off entirely
    out = prepare_data(cfg(write(tmp_path / "d.jsonl", rows), max_seq_len=24), tok_gen)
    assert (out.n_truncated, out.n_skipped, len(out.train)) == (2, 1, 2)
    assert max(len(ids) for ids in out.train.to_dict()["input_ids"]) == 24
    with pytest.raises(DataError) as info:
        prepare_data(cfg(write(tmp_path / "e.jsonl", rows[2:]), max_seq_len=24), tok_gen)
    assert "cut off by max_seq_len=24" in str(error(info))


@pytest.mark.parametrize("fmt", ["messages", "text"])
def test_packing_blocks_of_exactly_max_seq_len(tmp_path, tok_gen, fmt):
    rng = random.Random(1)
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 8)))},
                          {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 8)))}]}
            if fmt == "messages" else {"text": " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))}
            for _ in range(30)]
    path = write(tmp_path / "d.jsonl", rows)
    plain = prepare_data(cfg(path), tok_gen).train.to_dict()
    packed = prepare_data(cfg(path, packing=True, max_seq_len=32), tok_gen).train.to_dict()
    assert all(len(ids) == 32 for ids in packed["input_ids"])
    assert all(len(x) == 32 for x in packed["labels"] + packed["attention_mask"])
    trained = lambda ds: [t for ids, labels in zip(ds["input_ids"], ds["labels"])  # noqa: E731
                          for t, label in zip(ids, labels) if label != -100]
    eos = tok_gen.eos_token_id
    assert [t for t in trained(packed) if t != eos] == [t for t in trained(plain) if t != eos]
    for ids, labels, attn in zip(packed["input_ids"], packed["labels"], packed["attention_mask"]):
        assert all(label in (-100, i) for i, label in zip(ids, labels))
        assert all(label == -100 for label, a in zip(labels, attn) if a == 0)
    assert packed["attention_mask"][-1][-1] == 0 or sum(map(len, plain["input_ids"])) % 32 == 0


def test_val_split_sizes_and_determinism(tmp_path, tok_gen):
    rows = [{"text": f"{w} is a word"} for w in WORDS[:20]]
    path = write(tmp_path / "d.jsonl", rows)
    a, b, c = (prepare_data(cfg(path, val_split=0.2, seed=seed), tok_gen) for seed in (1, 1, 2))
    assert (len(a.train), len(a.eval)) == (16, 4)
    ids = lambda ds: ds.to_dict()["input_ids"]  # noqa: E731
    assert ids(a.eval) == ids(b.eval) and ids(a.train) == ids(b.train)
    assert ids(a.eval) != ids(c.eval)
    everything = ids(prepare_data(cfg(path), tok_gen).train)
    assert sorted(map(tuple, ids(a.train) + ids(a.eval))) == sorted(map(tuple, everything))
    small = prepare_data(cfg(write(tmp_path / "s.jsonl", rows[:3]), val_split=0.01), tok_gen)
    assert (len(small.train), len(small.eval)) == (2, 1)  # at least one held out
    packed = prepare_data(cfg(path, val_split=0.2, packing=True, max_seq_len=16), tok_gen)
    assert packed.eval is not None and all(len(x) == 16 for x in ids(packed.eval))
    with pytest.raises(DataError) as info:
        prepare_data(cfg(write(tmp_path / "one.jsonl", rows[:1]), val_split=0.1), tok_gen)
    assert "at least 2" in str(error(info))


def test_collate_pads_with_eos_when_there_is_no_pad_token(tok_none):
    fn = collate(tok_none)
    batch = fn([{"input_ids": [7, 8, 9], "attention_mask": [1, 1, 1], "labels": [-100, 8, 9]},
                {"input_ids": [5], "attention_mask": [1], "labels": [5]}])
    eos = tok_none.eos_token_id
    assert batch["input_ids"].tolist() == [[7, 8, 9], [5, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 8, 9], [5, -100, -100]]
    assert tok_none.pad_token is None  # not modified


