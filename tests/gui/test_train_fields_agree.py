"""The Train form says what the trainer would: its checks are TrainConfig's and trainer.rundir's own,
beside the field at fault."""

import json

import pytest

from planner.gui.train.fields import validate
from trainer.config import ConfigError, TrainConfig


@pytest.mark.parametrize("field, value", [
    ("method", "qlroa"), ("quant", "nf5"), ("lora_r", 0), ("lora_r", 10**30), ("batch_size", 0), ("batch_size", 1.5),
    ("gradient_accumulation_steps", 0), ("max_seq_len", -1), ("max_steps", -2), ("max_steps", 0),
    ("learning_rate", 0), ("learning_rate", float("inf")), ("epochs", -1), ("grad_checkpointing", "yes"),
    ("num_processes", 0), ("num_processes", 1.5), ("sharding", "zero9"), ("sharding", "fdsp"),
    ("output_dir", ""), ("model", 5), ("trust_remote_code", "true"),
])
def test_same_verdict_as_the_trainer(tmp_path, field, value):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hi"}) + "\n")
    fields = {"model": "org/model", "dataset": str(data), "output_dir": str(tmp_path / "run"), field: value}
    mine = validate(fields)
    with pytest.raises(ConfigError) as theirs:
        TrainConfig.from_dict(fields)
    assert mine is not None and mine.field == field == theirs.value.field
    assert mine.message == str(theirs.value)


def test_a_folder_that_is_not_a_run_is_refused_beside_the_run_dir(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hi"}) + "\n")
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    error = validate({"model": "org/model", "dataset": str(data), "output_dir": str(mine)})
    assert error is not None and error.field == "output_dir"
    assert "not a run of this trainer" in error.message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert validate({"model": "org/model", "dataset": str(data), "output_dir": str(empty)}) is None
