"""trainer.data / trainer.formats: files -> formats -> tokenized, masked, truncated, packed, split."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trainer.config import TrainConfig
from trainer.data import DataError, PreparedData, collate, detect_format, prepare_data

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


# ---- errors -------------------------------------------------------------------------------------

def _raw(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


OK = '{"instruction": "a", "output": "b"}'
MSG = lambda *m: json.dumps({"messages": list(m)})  # noqa: E731


@pytest.mark.parametrize("name,text,expected,line", [
    ("data.jsonl", "", "data.jsonl: empty file (no rows)", None),
    ("data.jsonl", "\n  \n", "data.jsonl: empty file (no rows)", None),
    ("data.json", "[]", "data.json: empty JSON array (no rows)", None),
    ("data.csv", "instruction,input,output\n", "data.csv: no rows", None),
    ("data.jsonl", "\n".join([OK] * 6 + ['{"instruction": "a" "output": "b"}']),
     "data.jsonl line 7: malformed JSON (Expecting ',' delimiter)", 7),
    ("data.jsonl", OK + "\n\n" + '{"instruction": "a"}', "data.jsonl line 3: alpaca row lacks 'output'", 3),
    ("data.jsonl", OK + "\n[1, 2]", "data.jsonl line 2: expected a JSON object, got array", 2),
    ("data.json", '[\n {"text": "a"},\n {"text": "b",}\n]', "data.json line 3: malformed JSON", 3),
    ("data.json", json.dumps([{"text": "a"}, {"text": "b"}, {"text": None}]), "data.json item 2: text row lacks 'text'",
     None),
    ("data.json", '[{"text": "a"}, 3]', "data.json item 1: expected a JSON object, got number", None),
    ("data.json", '{\n "data": [{"text": "a"}]\n}', "data.json line 1: malformed JSON lines", 1),
    ("data.csv", "instruction,input,answer\na,b,c\n", "data.csv line 2: alpaca row lacks 'output'", 2),
    ("data.csv", "instruction,input,output\na,b,c\nd,e,f,g\n", "data.csv line 3: cannot read CSV", 3),
    ("data.csv", "messages\nhello\n", "data.csv line 2: 'messages' must be a list of {role, content} objects, "
                                      "got string", 2),
    ("data.jsonl", '{"prompt": "a", "completion": "b"}', "data.jsonl: unknown format: columns ['prompt', "
                                                        "'completion']", None),
    ("data.jsonl", '{"messages": "hi"}', "data.jsonl line 1: 'messages' must be a list", 1),
    ("data.jsonl", MSG({"role": "user", "content": "a"}) + "\n" + MSG({"content": "a"}),
     "data.jsonl line 2: message 1 lacks 'role'", 2),
    ("data.jsonl", MSG({"role": "user"}), "data.jsonl line 1: message 1 lacks 'content'", 1),
    ("data.jsonl", MSG({"role": "user", "content": "a"}, {"role": "bot", "content": "b"}),
     "data.jsonl line 1: message 2 has role 'bot'; expected user, assistant or system", 1),
    ("data.jsonl", MSG({"role": "user", "content": ["a"]}), "data.jsonl line 1: message 1 'content' must be a "
                                                            "string, got array", 1),
    ("data.jsonl", MSG("hi"), "data.jsonl line 1: message 1 must be a {role, content} object, got string", 1),
    ("data.jsonl", json.dumps({"conversations": [{"from": "bot", "value": "x"}]}),
     "data.jsonl line 1: message 1 has from 'bot'; expected human, gpt or system", 1),
    ("data.jsonl", '{"text": 5}', "data.jsonl line 1: 'text' must be a string, got number", 1),
    ("data.jsonl", '{"text": "\\ud800"}', "data.jsonl line 1: 'text' holds an invalid unicode escape", 1),
    ("data.txt", "hello", "data.txt: unsupported file type '.txt'", None),
])
def test_errors(tmp_path, tok_gen, name, text, expected, line):
    path = _raw(tmp_path, name, text)
    with pytest.raises(DataError) as info:
        prepare_data(cfg(path), tok_gen)
    err = error(info)
    assert str(err).startswith(expected), str(err)
    assert err.line == line and err.path == str(path)


def test_error_missing_file_and_bad_bytes(tmp_path, tok_gen):
    with pytest.raises(DataError) as info:
        prepare_data(cfg(tmp_path / "nope.jsonl"), tok_gen)
    assert str(error(info)) == "nope.jsonl: no such file"
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(OK.encode() + b'\n{"text": "\xff"}\n')
    with pytest.raises(DataError) as info:
        prepare_data(cfg(bad), tok_gen)
    assert str(error(info)) == "bad.jsonl line 2: not valid UTF-8"
    broken = tmp_path / "d.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as info:
        prepare_data(cfg(broken), tok_gen)
    assert str(error(info)).startswith("d.parquet: cannot read PARQUET (")


def test_empty_parquet(tmp_path, tok_gen):
    import datasets

    path = tmp_path / "e.parquet"
    datasets.Dataset.from_dict({"text": []}).to_parquet(str(path))
    with pytest.raises(DataError) as info:
        prepare_data(cfg(path), tok_gen)
    assert str(error(info)) == "e.parquet: no rows"


def test_template_errors_name_the_row(tmp_path, backend):
    tok = _wrap(backend, STRICT_TEMPLATE)
    rows = [{"messages": CHAT[1:3]}, {"messages": CHAT[1:3]}, {"messages": [CHAT[2], CHAT[1], CHAT[2]]}]
    with pytest.raises(DataError) as info:
        prepare_data(cfg(write(tmp_path / "d.jsonl", rows)), tok)
    err = error(info)
    assert err.line == 3 and str(err) == ("d.jsonl line 3: chat template failed "
                                          "(Conversation roles must alternate user/assistant)")


# ---- fuzz ---------------------------------------------------------------------------------------

KEYS = ["text", "instruction", "input", "output", "system", "messages", "conversations", "role", "content",
        "from", "value"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32),
                    st.text(alphabet=st.sampled_from("ab <|>\n\"\\é中"), max_size=8),
                    st.sampled_from(["user", "assistant", "system", "human", "gpt", "bot", ""]))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
strings = st.text(alphabet=st.sampled_from("ab <|>\n\"\\é中"), max_size=8)
loose = st.one_of(strings, strings, scalars)  # mostly right, sometimes anything
any_turn = st.fixed_dictionaries({}, optional={"role": scalars, "content": scalars, "from": scalars, "value": scalars})
words = st.text(alphabet=st.sampled_from("ab <|>\n\"\\é中"), min_size=1, max_size=8)
role_turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": words})
from_turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system"]), "value": words})
def turns(good):  # a list of right turns, or of turns of which some are anything
    return st.one_of(st.lists(good, max_size=4), st.lists(st.one_of(good, any_turn), max_size=4))


kinds = [st.dictionaries(keys, values, max_size=4),
         st.fixed_dictionaries({"messages": turns(role_turn)}),
         st.fixed_dictionaries({"conversations": turns(from_turn)}),
         st.fixed_dictionaries({"instruction": loose, "output": loose}, optional={"input": loose, "system": loose}),
         st.fixed_dictionaries({"text": loose})]
files = st.one_of(*(st.lists(kind, min_size=1, max_size=4) for kind in kinds),  # one kind per file
                  st.lists(st.one_of(kinds), min_size=1, max_size=4))
options = st.fixed_dictionaries({"tok": st.sampled_from(["tok_gen", "tok_plain", "tok_none"]),
                                 "packing": st.booleans(), "val_split": st.sampled_from([0.0, 0.3]),
                                 "max_seq_len": st.sampled_from([6, 64]), "assistant_only_loss": st.booleans()})
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _prepares_or_data_error(request, data: bytes, opts: dict, suffix: str = ".jsonl") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        tok = request.getfixturevalue(opts.pop("tok"))
        try:
            out = prepare_data(cfg(path, **opts), tok)
        except DataError as err:
            assert "\n" not in str(err)
            event(f"DataError: {err.problem.split('(')[0].split(':')[0][:40]}")
            return
        event(f"prepared {out.format}")
        assert len(out.train) >= 1 and out.n_examples >= 1
        assert os.listdir(tmp) == [path.name]


@FUZZ
@given(text=st.one_of(st.text(max_size=120), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
       opts=options)
def test_fuzz_arbitrary_text(request, text, opts):
    _prepares_or_data_error(request, text.encode("utf-8", "surrogatepass"), opts)


@FUZZ
@given(rows=files, opts=options, suffix=st.sampled_from([".jsonl", ".json"]),
       array=st.booleans())
def test_fuzz_arbitrary_json_objects(request, rows, opts, suffix, array):
    body = json.dumps(rows) if array else "\n".join(json.dumps(r) for r in rows)
    _prepares_or_data_error(request, body.encode("utf-8"), opts, suffix)
