"""The Train form as one table (issue 14.4): each TrainConfig field it shows is bound once,
written from a config, read back, and quiet while a config fills it."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dataclasses import fields  # noqa: E402

import pytest  # noqa: E402

from planner.gui.train.form import DEFAULTS, TrainForm  # noqa: E402
from planner.gui.train.gpus import GpuOption  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

GPUS = (GpuOption(0, "GPU 0"), GpuOption(1, "GPU 1"))
CONFIG = {"model": "/m", "dataset": "/d.jsonl", "output_dir": "/r", "method": "lora", "quant": "int8",
          "learning_rate": 1e-5, "batch_size": 2, "gradient_accumulation_steps": 8, "max_steps": 30, "epochs": 3.0,
          "max_seq_len": 512, "lora_r": 4, "grad_checkpointing": False, "trust_remote_code": True,
          "num_processes": 1, "sharding": "fsdp"}


@pytest.fixture
def form(qtbot):
    widget = TrainForm(GPUS)
    qtbot.addWidget(widget)
    return widget


def test_the_table_holds_trainconfig_fields_once(form):
    names = form.table.names()
    assert len(set(names)) == len(names) and set(names) <= {f.name for f in fields(TrainConfig)}
    assert set(DEFAULTS) <= set(names)
    # every field shown in the form's two groups has its error label; the GPU box has its own
    assert set(form.errors) == set(names) - {"num_processes", "sharding"}


def test_a_config_written_is_read_back_with_one_change_signal(form, qtbot):
    heard = []
    form.changed.connect(lambda: heard.append(1))
    form.set_fields(CONFIG)
    assert heard == [1]
    assert {k: form.fields()[k] for k in CONFIG} == CONFIG


def test_values_a_widget_cannot_show_leave_it_as_it_was(form):
    form.set_fields({"method": "nonsense", "batch_size": 2.5, "grad_checkpointing": "yes", "num_processes": True})
    shown = form.fields()
    assert (shown["method"], shown["batch_size"], shown["grad_checkpointing"]) == ("qlora", 1, True)
    assert shown["num_processes"] == 2  # both GPUs, as at the start


def test_the_preview_starts_with_the_source_then_the_form_order(form):
    assert list(form.fields()) == ["model", "dataset", "output_dir", *DEFAULTS, "trust_remote_code", "num_processes"]


def test_a_new_model_is_not_trusted_unless_its_config_says_so(form):
    form.set_fields({"model": "/a", "trust_remote_code": True})
    assert form.trust_box.isChecked()
    form.set_fields({"model": "/b"})
    assert not form.trust_box.isChecked()
    form.set_fields({"trust_remote_code": "true"})  # only a literal true runs a model's code
    assert not form.trust_box.isChecked()
