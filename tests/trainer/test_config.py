"""TrainConfig: validated at construction, JSON and YAML round trips, one-line errors."""

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.config import ConfigError, TrainConfig

BASE = {"model": "demo/model", "dataset": "demo/data.jsonl"}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_round_trip(tmp_path, suffix):
    cfg = TrainConfig(**BASE, method="lora", lora_targets=("q_proj", "v_proj"), modules_to_save=("lm_head",),
                      learning_rate=3e-4, val_split=0.1, extra={"note": "kept"})
    path = tmp_path / f"run{suffix}"
    cfg.dump(path)
    assert TrainConfig.load(path) == cfg
    assert TrainConfig.load(path).extra == {"note": "kept"}


def test_defaults_are_safe():
    cfg = TrainConfig(**BASE)
    assert cfg.trust_remote_code is False and cfg.method == "qlora" and cfg.precision == "auto"


def test_comma_strings_become_tuples():
    assert TrainConfig(**BASE, lora_targets="q_proj, v_proj").lora_targets == ("q_proj", "v_proj")


@pytest.mark.parametrize("field, value, message", [
    ("method", "qlroa", "did you mean qlora"),
    ("quant", "nf5", "quant"),
    ("optimizer", "adam", "optimizer"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", 1.5, "batch_size"),
    ("batch_size", True, "batch_size"),
    ("max_steps", 0, "trains nothing"),
    ("learning_rate", 0, "learning_rate"),
    ("epochs", math.inf, "epochs"),
    ("lora_dropout", 0.95, "lora_dropout"),
    ("val_split", 0.9, "val_split"),
    ("lora_targets", [], "lora_targets"),
    ("lora_targets", [3], "lora_targets"),
    ("packing", "yes", "packing"),
    ("model", " ", "model"),
])
def test_bad_values(field, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_dict({**BASE, field: value})
    assert "\n" not in str(err.value)


def test_unknown_and_missing_fields():
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        TrainConfig.from_dict({**BASE, "batch_szie": 2})
    with pytest.raises(ConfigError, match="dataset: missing"):
        TrainConfig.from_dict({"model": "m"})
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_dict(["model"])


@pytest.mark.parametrize("text, suffix, message", [
    ("{", ".json", "not valid JSON"), ("a: [", ".yaml", "not valid YAML"), ("[1, 2]", ".json", "mapping"),
])
def test_bad_files(tmp_path, text, suffix, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match="no such config file"):
        TrainConfig.load(tmp_path / "missing.json")


@given(st.dictionaries(st.sampled_from(["batch_size", "lora_r", "epochs", "learning_rate", "method", "seed",
                                         "max_seq_len", "val_split", "lora_targets"]),
                       st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                                 st.lists(st.integers(), max_size=2))))
def test_anything_is_valid_or_a_config_error(fields):
    try:
        TrainConfig.from_dict({**BASE, **fields})
    except ConfigError:
        pass


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**40, max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4))
def test_any_json_values_are_a_config_or_one_config_error(values):
    """Issue 12: any JSON a user can write is accepted or refused with one line naming the field."""
    try:
        cfg = TrainConfig.from_dict({**BASE, **values})
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        assert exc.field == "" or exc.field in FIELDS
        return
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg  # what is accepted round-trips


# ---- the one TrainSetup <-> TrainConfig mapping, round trips both ways ----------------------------
from dataclasses import replace  # noqa: E402

from planner.options import ATTENTIONS, METHODS, OPTIMIZERS, QUANTS, TrainSetup  # noqa: E402
from trainer.config import SETUP_FIELDS, fields_of, setup_of  # noqa: E402

PLANNED = st.builds(
    lambda method, quant, optimizer, precision, batch, seq, ckpt, attention, r, alpha, dropout, targets, gpus,
    sharding, loss, upcast: TrainSetup(method=method, quant=quant if method == "qlora" else None,
                                       optimizer=optimizer, loss=loss if gpus == 1 else "standard",
                                       kbit_prepare=upcast,
                         precision=precision, batch_size=batch, seq_len=seq, grad_checkpointing=ckpt,
                         attention=attention, lora_r=r, lora_alpha=alpha, lora_dropout=dropout,
                         lora_targets=targets, num_gpus=gpus, sharding=sharding if gpus > 1 else "none"),
    st.sampled_from(METHODS), st.sampled_from(QUANTS), st.sampled_from(OPTIMIZERS),
    st.sampled_from(("bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")), st.integers(1, 64),
    st.integers(1, 1 << 16), st.booleans(), st.sampled_from(ATTENTIONS), st.integers(1, 256), st.integers(1, 512),
    st.sampled_from((0.0, 0.05, 0.1)), st.sampled_from((("all-linear",), ("q_proj", "v_proj"))),
    st.integers(1, 8), st.sampled_from(("ddp", "fsdp", "zero3")), st.sampled_from(("standard", "chunked")),
    st.booleans())


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(PLANNED)
def test_a_plan_survives_the_trip_to_a_run_and_back(setup):
    """Setup -> run config -> setup: what the trainer runs is what was planned (zero3 runs as FSDP)."""
    cfg = TrainConfig.from_dict({**BASE, **fields_of(setup)})
    back = setup_of(cfg, setup.precision)
    expected = setup if setup.sharding != "zero3" else replace(setup, sharding="fsdp")
    assert back == expected


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(PLANNED)
def test_a_run_survives_the_trip_to_a_plan_and_back(planned):
    """Run config -> setup -> run config: every field a plan decides comes back unchanged."""
    cfg = TrainConfig.from_dict({**BASE, **fields_of(planned), "seed": 7, "learning_rate": 1e-4})
    again = fields_of(setup_of(cfg, cfg.precision))
    assert {k: again[k] for k in SETUP_FIELDS} == {k: json.loads(json.dumps(cfg.to_dict()[k])) for k in SETUP_FIELDS}
