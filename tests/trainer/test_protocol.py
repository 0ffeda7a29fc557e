"""The event protocol: round trips, validation, and tolerance of junk lines."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer.protocol import REQUIRED, ProtocolError, decode, encode, parse_command, parse_request

STEP = dict(step=3, epoch=0.1, loss=2.5, lr=1e-4, grad_norm=0.9, tokens_per_s=1200.0,
            peak_alloc_bytes=10, peak_reserved_bytes=12, rss_bytes=99)


def test_round_trip_step():
    line = encode("step", 1.23456, **STEP)
    body = json.loads(line)
    assert body["v"] == 1 and body["event"] == "step" and body["t"] == 1.235
    ev = decode(line)
    assert ev.kind == "step" and ev["loss"] == 2.5 and ev.get("eta_s") is None


def test_non_finite_loss_becomes_null():
    ev = decode(encode("step", 0, **{**STEP, "loss": math.nan}))
    assert ev["loss"] is None


@pytest.mark.parametrize("kind, fields, message", [
    ("step", {k: v for k, v in STEP.items() if k != "loss"}, "lacks loss"),
    ("nope", {}, "unknown event kind"),
    ("end", dict(status="exploded", steps=1, runtime_s=1.0, output_dir="x"), "end.status"),
    ("error", dict(type="disk", message="m", hint="h"), "error.type"),
    ("eval", dict(step=1, eval_loss=[1, 2]), "scalar"),
])
def test_invalid_events_are_refused(kind, fields, message):
    with pytest.raises(ProtocolError, match=message):
        encode(kind, 0, **fields)


@pytest.mark.parametrize("line", ["", "Traceback (most recent call last):", "[1,2]",
                                  '{"v": 2, "event": "eval", "t": 0, "step": 1, "eval_loss": 1}',
                                  '{"v": 1, "event": "eval", "step": 1, "eval_loss": 1}'])
def test_decode_refuses_junk(line):
    with pytest.raises(ProtocolError):
        decode(line)


@given(st.text())
def test_decode_never_raises_anything_else(line):
    try:
        decode(line)
    except ProtocolError:
        pass


def test_commands():
    assert parse_command(" STOP\n") == "stop"
    assert parse_command("checkpoint") == "checkpoint"
    assert parse_command("halt") is None and parse_command("") is None


def test_every_kind_documented():
    training = {"start", "step", "eval", "checkpoint", "end", "error"}
    generating = {"ready", "token", "done", "example", "score"}  # `python -m trainer generate` (docs/try.md)
    assert set(REQUIRED) == training | generating
    docs = (Path(__file__).resolve().parents[2] / "docs" / "try.md").read_text()
    assert all(f"`{kind}`" in docs for kind in generating)


@pytest.mark.parametrize("line, expected", [
    ('{"op": "generate", "id": 7, "prompt": "hi"}', {"op": "generate", "id": "7", "prompt": "hi"}),
    ("  STOP \n", "stop"), ("quit", "quit"), ("   ", None),
])
def test_generate_requests_parse(line, expected):
    assert parse_request(line) == expected


@pytest.mark.parametrize("line, message", [("{not json", "not a request"), ('{"op": "train"}', "one of generate"),
                                           ("[1, 2]", "one of generate")])
def test_a_bad_generate_request_says_why(line, message):
    with pytest.raises(ProtocolError, match=message):
        parse_request(line)
