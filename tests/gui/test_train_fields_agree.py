"""The Train form's checks mirror TrainConfig's (layering keeps trainer.config out of the planner):
for every field both check, the same bad value gets the same one-line message."""

import json

import pytest

from planner.gui.train_fields import SHARDINGS, validate
from trainer.config import SHARDINGS as TRAINER_SHARDINGS
from trainer.config import ConfigError, TrainConfig


@pytest.mark.parametrize("field, value", [
    ("method", "qlroa"), ("quant", "nf5"), ("lora_r", 0), ("batch_size", 0), ("batch_size", 1.5),
    ("gradient_accumulation_steps", 0), ("max_seq_len", -1), ("max_steps", -2), ("max_steps", 0),
    ("learning_rate", 0), ("learning_rate", float("inf")), ("epochs", -1), ("grad_checkpointing", "yes"),
    ("num_processes", 0), ("num_processes", 1.5), ("sharding", "zero9"), ("sharding", "fdsp"),
])
def test_same_verdict_as_the_trainer(tmp_path, field, value):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "hi"}) + "\n")
    fields = {"model": "org/model", "dataset": str(data), "output_dir": str(tmp_path / "run"), field: value}
    mine = validate(fields)
    with pytest.raises(ConfigError) as theirs:
        TrainConfig.from_dict(fields)
    assert mine is not None and mine.field == field
    # TrainConfig adds "(did you mean ...)" hints for choices; the form's message is its prefix
    assert str(theirs.value).startswith(mine.message), (mine.message, str(theirs.value))


def test_same_sharding_choices_as_the_trainer():
    assert SHARDINGS == TRAINER_SHARDINGS
