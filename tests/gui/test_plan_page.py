"""The desktop app driven through real widgets (pytest-qt, offscreen)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor, QPalette  # noqa: E402

from planner.catalog import resolve_model  # noqa: E402
from planner.gui.app import run  # noqa: E402
from planner.gui.plan.extras import cost_rows  # noqa: E402
from planner.gui.plan.model import FormValues  # noqa: E402
from planner.gui.plan.page import PlanPage  # noqa: E402
from planner.gui.window import MainWindow  # noqa: E402
from planner.launch import train_config_fields  # noqa: E402
from planner.samples import SampleLengths  # noqa: E402

LORA = 1  # bar index: Full, LoRA, QLoRA 8-bit, QLoRA 4-bit


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    return w


@pytest.fixture
def page(window) -> PlanPage:
    return window.pages["plan"]


def _all_heights(page: PlanPage) -> dict[str, tuple[float, ...]]:
    return {term: page.chart.bar_heights(term) for term in page.chart.bars}


def test_window_has_five_pages(window):
    assert window.windowTitle() == "Fine-Tune Planner"
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Hardware", "Plan", "Train", "Runs", "Try"]
    assert window.current_page == "plan"


def test_ctrl_number_switches_pages(window, qtbot):
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # window shortcuts only fire in the active window
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page == "train"
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page == "hardware"
    qtbot.keyClick(window, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page == "try"


def test_initial_page_is_selectable(qtbot):
    w = MainWindow("runs")
    qtbot.addWidget(w)
    assert w.current_page == "runs"


def test_default_plan_is_drawn_at_once(page):
    heights = page.chart.bar_heights("weights")
    assert len(heights) == 4 and all(h > 0 for h in heights)
    assert page.chart.gpu_line.value() == pytest.approx(24_564 / 1024)  # an RTX 4090 as nvidia-smi reports it
    assert "LoRA" in page.summary_label.text() and "fits on 23.99 GiB" in page.summary_label.text()
    assert page.form.errors["model"].text() == ""


def test_batch_size_grows_activation_segments(page, qtbot):
    before = page.chart.bar_heights("activations")
    page.form.batch_spin.setValue(8)
    qtbot.waitUntil(lambda: page.chart.bar_heights("activations") != before)
    after = page.chart.bar_heights("activations")
    assert after[LORA] > before[LORA]
    assert page.chart.bar_heights("weights") == page.plan.heights["weights"]


def test_seq_len_moves_the_stack(page, qtbot):
    before = _all_heights(page)
    page.form.seq_spin.setValue(8192)
    qtbot.waitUntil(lambda: _all_heights(page) != before)
    assert page.chart.bar_heights("logits")[LORA] > before["logits"][LORA]
    # segments above a grown one start higher: the bars really are stacked
    assert page.chart.bars["allocator_slack"].opts["y0"][LORA] > 0


def test_edits_in_a_burst_compute_once(page, qtbot, monkeypatch):
    calls = []
    original = page.recompute
    monkeypatch.setattr(page, "recompute", lambda: (calls.append(1), original()))
    page._debounce.timeout.disconnect()
    page._debounce.timeout.connect(page.recompute)
    for value in (2, 3, 4, 5):
        page.form.batch_spin.setValue(value)
    qtbot.waitUntil(lambda: calls == [1])
    assert page.plan.estimates[0].setup.batch_size == 5


def test_unknown_model_shows_error_and_keeps_bars(page, qtbot):
    before = _all_heights(page)
    plan = page.plan
    page.form.model_box.setEditText("no-such-org/no-such-model")
    qtbot.waitUntil(lambda: page.form.errors["model"].text() != "")
    assert "no-such" in page.form.errors["model"].text() and "\n" not in page.form.errors["model"].text()
    assert _all_heights(page) == before and page.plan is plan
    assert page.stale_label.isVisibleTo(page)
    # fixing the input clears the error and draws the new model
    page.form.model_box.setEditText("Qwen/Qwen2.5-0.5B")
    qtbot.waitUntil(lambda: page.form.errors["model"].text() == "")
    assert page.plan.model == "Qwen/Qwen2.5-0.5B" and not page.stale_label.isVisibleTo(page)
    assert page.chart.bar_heights("weights")[LORA] < before["weights"][LORA]


def test_gpu_memory_moves_line_and_verdict(page, qtbot):
    page.form.gpu_spin.setValue(80.0)
    qtbot.waitUntil(lambda: page.chart.gpu_line.value() == pytest.approx(80.0))
    assert "on 80 GiB" in page.summary_label.text()


def test_own_method_is_outlined(page, qtbot):
    page.form.method_box.setCurrentText("full")
    qtbot.waitUntil(lambda: page.chart.outline.opts["pens"][0].style() != Qt.PenStyle.NoPen)
    pens = page.chart.outline.opts["pens"]
    assert [p.style() == Qt.PenStyle.NoPen for p in pens] == [False, True, True, True]
    assert list(page.chart.outline.opts["height"]) == pytest.approx(page.plan.device_used_gib)


@pytest.mark.parametrize("quant, bar", [("nf4", 3), ("fp4", 3), ("int8", 2)])
def test_qlora_highlights_one_bar_and_the_precise_check_compares_that_one(page, qtbot, quant, bar):
    """Issue 13 point 2: the 4-bit simulation is compared with the 4-bit estimate, not the 8-bit one."""
    page.form.method_box.setCurrentText("qlora")
    page.form.quant_box.setCurrentText(quant)
    page.recompute()
    assert page.plan.highlight == tuple(i == bar for i in range(4))
    assert page.plan.estimates[bar].setup.quant == quant
    assert page.precise.analytic is page.plan.estimates[bar]
    from planner.gui.plan.precise import simulate_args

    args = simulate_args(page.precise.values)
    assert args[args.index("--quant") + 1] == quant
    pens = page.chart.outline.opts["pens"]
    assert [p.style() != Qt.PenStyle.NoPen for p in pens] == list(page.plan.highlight)


def test_warnings_and_assumptions_show_under_the_chart(page, qtbot):
    """Issue 13 point 3: the estimate's own assumptions are on screen, warnings first."""
    page.form.seq_spin.setValue(200_000)
    page.recompute()
    text = page.notes_label.text()
    assert "Warning:" in text and "exceeds the model" in text
    assert text.index("Warning:") < text.index("Assumes:")
    assert "ForCausalLMLoss" in text  # an assumption that changes the answer by GiB at long sequences
    page.form.gpus_spin.setValue(2)
    page.form.sharding_box.setCurrentText("zero2")
    page.recompute()
    assert "trainer cannot run this plan" in page.notes_label.text()


def test_model_completer_matches_any_part_any_case(page):
    completer = page.form.model_box.completer()
    completer.setCompletionPrefix("llama-3.1-8")
    matches = [completer.completionModel().index(i, 0).data() for i in range(completer.completionCount())]
    assert "meta-llama/Llama-3.1-8B" in matches
    assert page.form.model_box.currentText() == "meta-llama/Llama-3.1-8B"


def test_every_field_has_a_tooltip(page):
    for field in page.form.table:
        assert field.widget.toolTip(), field.name
    seq = page.form.seq_spin
    assert (seq.minimum(), seq.maximum(), seq.singleStep()) == (1, 1_048_576, 256)


def test_run_screenshot_writes_png(qapp, tmp_path):
    out = tmp_path / "x.png"
    assert run(page="plan", screenshot=str(out)) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_run_screenshot_unwritable_path(qapp, tmp_path, capsys):
    assert run(page="plan", screenshot=str(tmp_path / "missing-dir" / "x.png")) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_run_unknown_page(qapp, capsys):
    assert run(page="bogus") == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "plan" in err and err.count("\n") == 1


def test_chart_follows_a_palette_change(page):
    dark = QPalette(page.chart.palette())
    dark.setColor(QPalette.ColorRole.WindowText, QColor("#e6e6e6"))
    dark.setColor(QPalette.ColorRole.Window, QColor("#2b2b2b"))
    page.chart.setPalette(dark)
    assert page.chart.getAxis("left").textPen().color() == QColor("#e6e6e6")
    assert page.chart.gpu_line.pen.color() == QColor("#e6e6e6")


def test_the_precise_check_simulates_every_setting_of_the_form(page, qtbot):
    """The savers and the accumulation reach ``simulate`` too: it checks the estimate on screen."""
    from planner.gui.plan.precise import simulate_args

    page.form.method_box.setCurrentText("qlora")
    page.form.loss_box.setCurrentText("chunked")
    page.form.upcast_box.setChecked(False)
    page.form.offload_acts_box.setChecked(True)
    page.form.accum_spin.setValue(4)
    page.recompute()
    args = simulate_args(page.precise.values)
    assert args[args.index("--loss") + 1] == "chunked"
    assert "--no-kbit-upcast" in args and "--offload-activations" in args
    assert args[args.index("--gradient-accumulation-steps") + 1] == "4"
    assert "accumulation over 4 micro-batches" in page.notes_label.text()


def test_a_stack_plans_each_bar_with_its_recipe_and_cites_it(page, qtbot):
    """Issue 17 point 3: the Stack selector; the bars follow the stack's recipe per method, the notes
    name what it changed in one line, their tooltip cites each knob, and the recommendation says
    what "Use this plan" trains."""
    page.form.stack_box.setCurrentText("torchtune")
    page.recompute()
    full, lora = (next(e.setup for e in page.plan.estimates if e.setup.method == m) for m in ("full", "lora"))
    assert (full.optimizer, full.optimizer_in_backward) == ("paged_adamw_8bit", True)
    assert (lora.optimizer, lora.gradient_accumulation_steps, lora.loss) == ("adamw_torch_fused", 8, "chunked-output")
    notes = page.notes_label.text()
    assert "stack torchtune: loss chunked-output" in notes and "cross_entropy_loss.py" not in notes
    assert "torchtune/modules/loss/cross_entropy_loss.py:36" in page.notes_label.toolTip()
    qtbot.waitUntil(lambda: page.recommendation.rec is not None, timeout=10_000)
    assert "trains these settings with this app's trainer" in page.recommendation.text.toPlainText()


# ---- the user's data file (issue 19: packing and padding change the time): tokenized off the GUI
# thread by the trainer's own code; the recommendation and the Time and cost tab count its padding

def _plan(page, qtbot, **fields):
    """Fill the form and wait for the recommendation it leads to (a new one, not the last)."""
    before = page.recommendation.rec
    page.form.set_values(FormValues(**{**FormValues().__dict__, **fields}))
    qtbot.waitUntil(lambda: page.recommendation.rec not in (None, before) and page.recommender._future is None,
                    timeout=60_000)


def test_a_data_file_sets_the_padding_in_the_recommendation_and_the_costs(window, page, qtbot, demo_folder,
                                                                          varied_data):
    model = str(demo_folder / "model")
    _plan(page, qtbot, model=model, method="lora", batch_size=16, seq_len=512, data=str(varied_data))
    rec = page.recommendation.rec
    assert isinstance(rec.best.setup.lengths, SampleLengths) and rec.best.setup.lengths.count == 600
    assert "% padding); packing would train" in rec.explanation
    assert page.form.errors["data"].isHidden()
    # the Time and cost tab caught up with the measured file: its first row is the plan's own speed
    padded = float(page.costs.item(0, 3).text().replace(",", ""))
    unmeasured = cost_rows(page.form.values(), resolve_model(model), page._target.spec,
                           page._target.memory_bytes)[0].tokens_per_second
    assert padded < 0.7 * unmeasured  # 16 examples padded to the longest of them
    # packing: every position is data again, and "Use this plan" runs packed
    _plan(page, qtbot, model=model, method="lora", batch_size=16, seq_len=512, data=str(varied_data), packing=True)
    best = page.recommendation.rec.best.setup
    assert best.packing and train_config_fields(best, model, 1.0)["packing"] is True
    assert "packing would train" not in page.recommendation.rec.explanation
    # unpacked, memory is planned at the data's longest example (882 tokens), the chart's bars and the
    # precise check's simulation alike
    _plan(page, qtbot, model=model, method="lora", batch_size=16, seq_len=2048, data=str(varied_data))
    longest = page.recommendation.rec.best.setup.lengths.longest
    analytic = page.plan.estimates[page.plan.mine]
    assert 512 < longest < 2048 and any(f"longest example is {longest:,}" in a for a in analytic.assumptions)
    # the cut stays the form's: the recommendation and "Use this plan" say --seq-len 2048
    assert analytic.setup.seq_len == page.recommendation.rec.best.setup.seq_len == 2048
    from planner.gui.plan.precise import simulate_args

    args = simulate_args(page.precise.values, page.precise.analytic.setup)
    assert args[args.index("--seq-len") + 1] == str(longest)
    assert "longest example" in page.notes_label.text()
    _plan(page, qtbot, model=model, method="lora", batch_size=16, seq_len=512, data=str(varied_data), packing=True)
    sent = []
    window.state.plan_to_train.connect(sent.append)
    page.use_plan()
    assert sent[-1]["packing"] is True and sent[-1]["dataset"] == str(varied_data)  # the data planned with
    train = window.pages["train"].form
    assert train.dataset_edit.text() == str(varied_data) and train.packing_box.isChecked()


def test_a_missing_data_file_is_said_beside_its_field(page, qtbot, demo_folder, tmp_path):
    page.form.set_values(FormValues(model=str(demo_folder / "model"), data=str(tmp_path / "none.jsonl")))
    qtbot.waitUntil(lambda: not page.form.errors["data"].isHidden(), timeout=30_000)
    text = page.form.errors["data"].text()
    assert text.startswith("Data set file") and "no such file" in text
