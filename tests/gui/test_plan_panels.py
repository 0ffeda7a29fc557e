"""The Plan page beyond the chart: recommendation, size table, cost, hand-off, persistence."""

import time

import pytest
from PySide6.QtCore import QSettings, QSignalBlocker, Qt

from planner.catalog.gpus import find_gpu
from planner.gui.plan.page import PlanPage
from planner.gui.state import AppState
from planner.targets import GpuTarget
from planner.units import GiB


@pytest.fixture
def state(tmp_path):
    return AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def page(qtbot, state):
    p = PlanPage(state)
    qtbot.addWidget(p)
    return p


def test_recommendation_arrives_from_the_worker(page, qtbot):
    qtbot.waitUntil(lambda: "GiB per GPU" in page.recommendation.text.toPlainText(), timeout=10000)
    assert "LoRA" in page.recommendation.text.toPlainText()


def test_nothing_fits_lists_alternatives(page, qtbot):
    page.form.model_box.setEditText("meta-llama/Llama-2-70b-hf")
    qtbot.waitUntil(lambda: "What would fit" in page.recommendation.text.toPlainText(), timeout=15000)
    assert "with FSDP" in page.recommendation.text.toPlainText()


def test_each_alternative_the_trainer_can_run_has_its_own_use(page, qtbot, state):
    """Issue 13 points 1 and 5: nothing fits, so "Use the recommended plan" is off; an alternative
    the trainer can run goes to the Train page as planned; one it cannot run has no Use link."""
    from PySide6.QtCore import QUrl

    page.form.model_box.setEditText("meta-llama/Llama-2-70b-hf")
    qtbot.waitUntil(lambda: page.recommendation.rec is not None, timeout=15_000)
    rec = page.recommendation.rec
    assert rec.best is None and not page.recommendation.use_button.isEnabled()
    assert "nothing fits" in page.recommendation.use_button.toolTip()
    runnable = [i for i, a in enumerate(rec.alternatives) if a.trainable is None]
    blocked = [i for i, a in enumerate(rec.alternatives) if a.trainable is not None]
    assert runnable and blocked  # e.g. more GPUs with FSDP; one GPU with CPU offload
    page_html = page.recommendation.text.toHtml()
    assert all(f"use:{i}" in page_html for i in runnable) and not any(f"use:{i}\"" in page_html for i in blocked)
    alt = rec.alternatives[runnable[0]]
    with qtbot.waitSignal(state.plan_to_train) as handed:
        page.recommendation.text.anchorClicked.emit(QUrl(f"use:{runnable[0]}"))
    fields = handed.args[0]
    assert (fields["model"], fields["method"], fields["num_processes"]) == (alt.model, alt.setup.method,
                                                                            alt.setup.num_gpus)
    with qtbot.assertNotEmitted(state.plan_to_train):
        page.recommendation.text.anchorClicked.emit(QUrl(f"use:{blocked[0]}"))


def test_size_table_is_coloured_by_fit(page):
    assert (page.sizes.rowCount(), page.sizes.columnCount()) == (11, 7)
    # the other adapters' rows say what they assume (their base, prefix tuning's checkpointing)
    assert page.sizes.verticalHeaderItem(10).text() == "Prefix 16"
    assert "without gradient checkpointing" in page.sizes.verticalHeaderItem(10).toolTip()
    assert "without gradient checkpointing" in page.sizes.item(10, 0).toolTip()
    assert not page.sizes.verticalHeaderItem(2).toolTip()  # LoRA 16
    first, last = page.sizes.item(4, 0), page.sizes.item(0, 6)  # QLoRA 4 at 7B, Full AMP at 8x22B
    assert first.background().color() != last.background().color()
    assert "fits on 23.99 GiB" in first.toolTip() and "does not fit" in last.toolTip()
    # the MoE columns say which expert layout they assume
    assert "one nn.Linear per expert" in last.toolTip() and "expert" not in first.toolTip()
    assert "mixture of experts" in page.sizes.horizontalHeaderItem(6).toolTip()
    assert not page.sizes.horizontalHeaderItem(0).toolTip()


def test_cost_rows_start_with_the_gpu_planned_for(page):
    # no GPU NVML sees: the default catalog GPU is planned for, never called "this GPU" (issue 13.12)
    assert page.costs.item(0, 0).text() == "planned: RTX 4090"
    assert page.costs.rowCount() > 5
    assert all(page.costs.item(r, 5).text() for r in range(page.costs.rowCount()))  # hours
    # where each GPU's step time goes: its largest term, every term in the tooltip
    goes = page.costs.item(0, 4)
    assert goes.text().startswith("matmuls ") and "memory-bound kernels" in goes.toolTip()


def test_gpu_from_the_hardware_page_moves_the_line(page, qtbot, state):
    spec = find_gpu("A100 80GB SXM")
    state.set_gpu(GpuTarget("NVIDIA A100-SXM4-80GB", spec.memory_bytes, 1, "nvml", spec))
    qtbot.waitUntil(lambda: page.chart.gpu_line.value() == pytest.approx(80.0))
    assert "A100" in page.form.gpu_label.text() and "nvml" in page.form.gpu_label.text()


def test_errors_appear_beside_their_field(page, qtbot):
    page.form.targets_edit.setText("no_such_proj")
    qtbot.waitUntil(lambda: page.form.errors["lora_targets"].text() != "")
    assert "no_such_proj" in page.form.errors["lora_targets"].text()
    assert page.form.errors["model"].text() == ""
    page.form.targets_edit.setText("q_proj,v_proj")
    qtbot.waitUntil(lambda: page.form.errors["lora_targets"].text() == "")


@pytest.mark.parametrize("name, typed", [("seq_len", "4k"), ("seq_len", "1e3"), ("batch_size", "-4"),
                                         ("gpu_gib", "24,5")])
def test_a_number_qt_would_mangle_is_refused_beside_its_field(page, qtbot, name, typed):
    """Issue 13 point 6: "4k" never becomes 4, "1e3" never 13, "-4" never 4, "24,5" never 245."""
    from PySide6.QtTest import QTest

    spin = page.form.table[name].widget
    before, plan = spin.value(), page.plan
    spin.setFocus()
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), typed)
    page.recompute()
    label = page.form.errors[name]
    assert not label.isHidden() and f"'{typed}' is not" in label.text(), label.text()
    assert label.text().startswith(page.form.table[name].label + ":")
    assert spin.value() == before and page.plan is plan  # nothing was planned with a mangled number


def test_a_decimal_comma_is_read_where_the_locale_writes_one(page):
    from PySide6.QtCore import QLocale
    from PySide6.QtTest import QTest

    page.form.gpu_spin.setLocale(QLocale(QLocale.Language.German))
    page.form.gpu_spin.lineEdit().selectAll()
    QTest.keyClicks(page.form.gpu_spin.lineEdit(), "24,5")
    QTest.keyClick(page.form.gpu_spin.lineEdit(), Qt.Key.Key_Return)
    assert page.form.gpu_spin.value() == pytest.approx(24.5) and page.form.gpu_spin.problem() is None


def test_messages_name_the_field_not_the_cli_option(page, qtbot):
    page.form.targets_edit.setText("no_such_proj")
    page.recompute()
    text = page.form.errors["lora_targets"].text()
    assert "no_such_proj" in text and "--lora-targets" not in text and "LoRA targets" in text


def test_use_the_recommended_plan_sends_exactly_the_recommendation(page, qtbot, state):
    """Issue 13 point 1: Llama-3.1-8B at 4,096 tokens on a 24 GiB card, the form set to LoRA +
    adamw_torch (does not fit): the button under the recommendation sends the recommendation."""
    from trainer.config import TrainConfig

    page.form.method_box.setCurrentText("lora")
    page.form.optimizer_box.setCurrentText("adamw_torch")
    page.form.seq_spin.setValue(4096)
    page.recompute()
    assert not page.recommendation.use_button.isEnabled()  # nothing to use while it is computed
    qtbot.waitUntil(lambda: page.recommendation.use_button.isEnabled(), timeout=10_000)
    best = page.recommendation.rec.best.setup
    assert (best.method, best.loss) != ("lora", "standard")  # the form's own setup does not fit
    with qtbot.waitSignal(state.plan_to_train) as handed, qtbot.waitSignal(state.page_requested) as page_sig:
        page.recommendation.use_button.click()
    fields = handed.args[0]
    assert page_sig.args == ["train"]
    assert (fields["method"], fields["quant"], fields["optimizer"], fields["batch_size"], fields["max_seq_len"],
            fields["grad_checkpointing"], fields["loss"]) == (best.method, best.quant or "nf4", best.optimizer,
                                                              best.batch_size, 4096, best.grad_checkpointing, best.loss)
    assert fields["model"] == "meta-llama/Llama-3.1-8B" and fields["lora_targets"] == ["all-linear"]
    TrainConfig.from_dict({**fields, "dataset": "data.jsonl"})  # a valid run config once data is added

    with qtbot.waitSignal(state.plan_to_train) as mine:
        page.recommendation.mine_button.click()  # the form's own settings: a separate, labelled action
    assert (mine.args[0]["method"], mine.args[0]["optimizer"]) == ("lora", "adamw_torch")


def test_use_buttons_are_off_for_a_form_error_and_a_plan_the_trainer_cannot_run(page, qtbot):
    page.form.targets_edit.setText("no_such_proj")
    page.recompute()
    assert not page.recommendation.use_button.isEnabled() and not page.recommendation.mine_button.isEnabled()
    assert "error" in page.recommendation.mine_button.toolTip()
    page.form.targets_edit.setText("all-linear")
    page.form.gpus_spin.setValue(2)
    page.form.sharding_box.setCurrentText("fsdp")
    page.form.offload_box.setCurrentText("optimizer")
    page.recompute()
    assert not page.recommendation.mine_button.isEnabled()
    assert "offload" in page.recommendation.mine_button.toolTip()


def test_knobs_persist(qtbot, state):
    first = PlanPage(state)
    qtbot.addWidget(first)
    first.form.seq_spin.setValue(4096)
    first.form.method_box.setCurrentText("qlora")
    first.recompute()
    again = PlanPage(state)
    qtbot.addWidget(again)
    assert again.form.seq_spin.value() == 4096 and again.form.method_box.currentText() == "qlora"


def test_recompute_is_under_50_ms(page):
    page.recompute()  # warm caches
    times = []
    for seq in (1024, 2048, 4096):
        with QSignalBlocker(page.form.seq_spin):
            page.form.seq_spin.setValue(seq)
        t0 = time.perf_counter()
        page.recompute()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[1]
    print(f"plan recompute: {median * 1000:.1f} ms")
    assert median < 0.15  # target 50 ms; margin for the shared CI machine


def test_the_recommendation_shows_its_warnings_first(page, qtbot):
    page.form.model_box.setEditText("meta-llama/Llama-2-7b-hf")  # 4,096 positions
    page.form.seq_spin.setValue(8192)
    page.form.gpu_spin.setValue(200.0)
    page.recompute()
    qtbot.waitUntil(lambda: page.recommendation.rec is not None, timeout=10_000)
    text = page.recommendation.text.toPlainText()
    assert text.startswith("Warning: seq_len 8,192 exceeds the model's context")
    assert page.recommendation.rec.explanation in text


def test_memory_saving_switches_change_the_plan_and_travel_to_the_train_page(page, qtbot, state):
    """Issue 15: the chunked loss and QLoRA without the fp32 upcast are switches on the Plan page;
    the bars follow them and "Use my settings" carries them into the run config."""
    page.form.seq_spin.setValue(4096)
    page.recompute()
    before = page.plan.estimates[page.plan.mine].peak_allocated_bytes
    page.form.loss_box.setCurrentText("chunked")
    page.form.method_box.setCurrentText("qlora")
    page.form.upcast_box.setChecked(False)
    page.recompute()
    mine = page.plan.estimates[page.plan.mine]
    assert mine.setup.loss == "chunked" and not mine.setup.kbit_prepare
    assert mine.peak_allocated_bytes < before - 4 * GiB
    qtbot.waitUntil(lambda: page.recommendation.mine_button.isEnabled(), timeout=10_000)
    with qtbot.waitSignal(state.plan_to_train) as handed:
        page.recommendation.mine_button.click()
    assert handed.args[0]["loss"] == "chunked" and handed.args[0]["kbit_upcast"] is False


def test_offloaded_activations_show_what_left_for_host_ram_and_travel_to_the_train_page(page, qtbot, state):
    """Issue 15.2: the switch moves the checkpoints off the bars (the total says what host RAM
    holds instead), needs checkpointing (said beside the switch), and rides along to the run."""
    page.form.seq_spin.setValue(8192)
    page.recompute()
    before = page.plan.estimates[page.plan.mine]
    page.form.offload_acts_box.setChecked(True)
    page.recompute()
    mine = page.plan.estimates[page.plan.mine]
    assert mine.setup.offload_activations and mine.host_bytes > 0
    assert mine.device_used_bytes < before.device_used_bytes
    host = mine.host_bytes / GiB
    assert page.chart.totals[page.plan.mine].toPlainText().endswith(f"+{host:.1f} GiB host")
    assert f"{host:.1f} GiB in host RAM" in page.summary_label.text()
    qtbot.waitUntil(lambda: page.recommendation.mine_button.isEnabled(), timeout=10_000)
    with qtbot.waitSignal(state.plan_to_train) as handed:
        page.recommendation.mine_button.click()
    assert handed.args[0]["offload_activations"] is True and handed.args[0]["grad_checkpointing"] is True
    page.form.ckpt_box.setChecked(False)
    qtbot.waitUntil(lambda: "needs" in page.form.errors["offload_activations"].text())
    assert "checkpointing" in page.form.errors["offload_activations"].text()


def test_the_optimizer_in_backward_switch_moves_the_full_bar_only(page, qtbot, state):
    page.recompute()
    before = [e.device_used_bytes for e in page.plan.estimates]
    page.form.in_backward_box.setChecked(True)
    page.recompute()
    after = [e.device_used_bytes for e in page.plan.estimates]
    full = page.plan.methods.index("full")
    assert after[full] < before[full] - 10 * GiB  # 8B's bf16 gradients no longer held at once
    assert [a for i, a in enumerate(after) if i != full] == [b for i, b in enumerate(before) if i != full]
    page.form.method_box.setCurrentText("full")
    page.recompute()
    qtbot.waitUntil(lambda: page.recommendation.mine_button.isEnabled(), timeout=10_000)
    with qtbot.waitSignal(state.plan_to_train) as handed:
        page.recommendation.mine_button.click()
    fields = handed.args[0]
    assert fields["optimizer_in_backward"] is True and fields["max_grad_norm"] == 0.0
    assert fields["gradient_accumulation_steps"] == 1
