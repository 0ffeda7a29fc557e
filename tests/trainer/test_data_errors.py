"""trainer.data / trainer.formats: every bad input is one DataError naming file and line (and fuzzed)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
from datatools import (  # noqa: E402,F401
    CHAT,
    STRICT_TEMPLATE,
    _wrap,
    backend,
    cfg,
    error,
    tok_gen,
    tok_none,
    tok_plain,
    write,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trainer.data import DataError, prepare_data

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
    ("data.csv", "instruction,input,output\na,b,c\nd,e,f,g\n",
     "data.csv line 3: this row has 4 fields but the header has 3", 3),
    ("data.csv", "instruction,input,output\na,b,c\nd,e\n", "data.csv line 3: this row has 2 fields but the header "
                                                          "has 3", 3),
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
