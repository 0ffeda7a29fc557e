"""The Plan form as one table (issue 14.4): every FormValues field bound once, read, written,
watched, and named by the CLI option the planner's messages use."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dataclasses import asdict, fields, replace  # noqa: E402

import pytest  # noqa: E402

from planner.cli import build_parser  # noqa: E402
from planner.gui.plan.form import PlanForm  # noqa: E402
from planner.gui.plan.model import FormValues  # noqa: E402
from planner.options import TrainSetup  # noqa: E402

OTHER = FormValues(model="mistralai/Mistral-7B-v0.1", stack="axolotl", method="qlora", precision="fp16",
                   optimizer="paged_adamw_8bit",
                   batch_size=3, seq_len=1024, lora_r=8, grad_checkpointing=False, attention="eager", gpu_gib=79.25,
                   quant="fp4", double_quant=False, adapter_dtype="bf16", lora_alpha=64, lora_targets="q_proj,v_proj",
                   modules_to_save="lm_head", num_gpus=4, sharding="zero3", offload="params",
                   dataset_tokens=123_000_000, epochs=2.5, max_quality=True, loss="chunked", kbit_upcast=False,
                   offload_activations=True, optimizer_in_backward=True, gradient_accumulation_steps=4, use_dora=True,
                   peft="prompt", virtual_tokens=32, kernels="unsloth", packing=True, data="~/train.jsonl")


@pytest.fixture
def form(qtbot):
    widget = PlanForm()
    qtbot.addWidget(widget)
    return widget


def test_the_table_binds_every_form_value_once(form):
    assert sorted(form.table.names()) == sorted(f.name for f in fields(FormValues))
    assert len(set(form.table.widgets())) == len(form.table.fields)
    assert set(form.errors) == set(form.table.names())


def test_values_written_are_read_back(form):
    assert asdict(OTHER) != asdict(FormValues())  # every field differs from its default
    assert all(getattr(OTHER, f.name) != getattr(FormValues(), f.name) for f in fields(FormValues))
    form.set_values(OTHER)
    assert form.values() == OTHER


def test_every_field_announces_its_change_once(form, qtbot):
    heard = []
    form.changed.connect(lambda: heard.append(1))
    for f in form.table:
        before = len(heard)
        if f.read() == getattr(OTHER, f.name):
            continue  # the stack's preset, chosen above, already wrote it
        f.write(getattr(OTHER, f.name))
        assert len(heard) == before + 1, f.name


def test_each_option_the_planner_names_is_one_of_the_cli(form):
    """A field's option is its name with dashes (gpu_gib alone differs: --gpu-memory-gib), and
    each is an option of `recommend`, the command that takes all of them."""
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    cli = {o for a in sub.choices["recommend"]._actions for o in a.option_strings}
    assert {f.cli_option for f in form.table} <= cli
    setup = {f.name for f in fields(TrainSetup)}
    assert [f.name for f in form.table if f.option] == ["gpu_gib"]
    assert {f.name for f in form.table if f.name in setup} >= {"batch_size", "seq_len", "lora_r", "num_gpus"}


@pytest.mark.parametrize("name", [f.name for f in fields(FormValues)])
def test_a_message_naming_an_option_lands_under_its_field_in_its_words(form, name):
    field = form.table[name]
    form.show_error(f"{field.cli_option} must be something else")
    shown = [n for n, label in form.errors.items() if not label.isHidden()]
    assert shown == [name]
    assert form.errors[name].text() == f"{field.title} must be something else"


def test_real_planner_messages(form):
    form.show_error("--offload params needs --sharding fsdp or zero3 (ZeRO-2 keeps whole parameters)")
    assert form.errors["offload"].text().startswith("Offload params needs --sharding")
    form.show_error("unknown model 'x/y'; closest: ...")  # names no option: the model's
    assert form.errors["model"].text() == "unknown model 'x/y'; closest: ..."
    assert form.errors["offload"].isHidden()
    form.show_error(None)
    assert all(label.isHidden() for label in form.errors.values())


def test_a_refused_number_is_named_by_its_label(form):
    form.seq_spin.lineEdit().setText("4k")
    name, message = form.input_problem()
    assert name == "seq_len" and message.startswith("Sequence length: '4k' is not")


def test_a_planner_error_goes_beside_the_field_it_names_by_name(qtbot):
    """Issue 14 ("data as strings"): the field comes from PlannerError.field, not from parsing the
    message; the message still reads in the form's words."""
    from planner.errors import PlannerError

    form = PlanForm()
    qtbot.addWidget(form)
    error = PlannerError("--offload params needs --sharding fsdp or zero3", "offload")
    form.show_error(str(error), error.field)
    label = form.errors["offload"]
    assert not label.isHidden() and label.text().startswith(form.table["offload"].title)
    assert form.errors["sharding"].isHidden()  # named second in the text, but not at fault


def test_choosing_a_stack_writes_its_defaults_and_hf_undoes_them(form, qtbot):
    heard = []
    form.changed.connect(lambda: heard.append(1))
    form.stack_box.setCurrentText("torchtune")
    v = form.values()
    assert (v.stack, v.loss, v.adapter_dtype, v.kbit_upcast) == ("torchtune", "chunked-output", "bf16", False)
    # and the recipe for the form's method: torchtune's LoRA one
    assert (v.optimizer, v.gradient_accumulation_steps) == ("adamw_torch_fused", 8)
    assert heard == [1]  # one announcement for the whole preset
    form.method_box.setCurrentText("full")  # its full recipe: paged 8-bit AdamW, stepped in backward
    v = form.values()
    assert (v.optimizer, v.optimizer_in_backward, v.gradient_accumulation_steps) == ("paged_adamw_8bit", True, 1)
    before = form.values()
    form.stack_box.setCurrentText("hf")
    assert form.values() == replace(before, stack="hf", loss="standard", adapter_dtype="fp32", kbit_upcast=True,
                                    optimizer="adamw_torch", optimizer_in_backward=False)
