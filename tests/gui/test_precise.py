"""The Plan page's Precise check runs precise mode in a child process (torch never enters the app)."""

import sys

import pytest
from PySide6.QtCore import QSettings

from planner.catalog import resolve_model
from planner.gui.plan.model import CATEGORY_LABELS, analytic_categories, compare_categories, largest_difference
from planner.gui.plan.page import PlanPage
from planner.gui.state import AppState
from planner.memory import estimate
from planner.options import TrainSetup
from planner.units import GiB


@pytest.fixture
def page(qtbot, tmp_path):
    p = PlanPage(AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(p)
    p.form.model_box.setEditText("Qwen/Qwen2.5-0.5B")
    p.form.seq_spin.setValue(256)
    p.recompute()
    return p


def test_precise_check_compares_with_the_estimate(page, qtbot):
    page.precise.run_button.click()
    assert "Simulating" in page.precise.result.text()
    qtbot.waitUntil(lambda: "Largest difference: " in page.precise.result.text(), timeout=120_000)
    text = page.precise.result.text()
    assert "Simulated peak allocated per phase" in text and "Device used" in text
    assert "torch" not in sys.modules  # it ran in a child process

    table, rows = page.precise.table, page.precise.rows
    assert table.isVisibleTo(page.precise)
    labels = [table.verticalHeaderItem(r).text() for r in range(table.rowCount())]
    assert labels == [*CATEGORY_LABELS.values(), "peak allocated"]
    *categories, total = rows
    assert sum(r.simulated_bytes for r in categories) == total.simulated_bytes
    assert total.analytic_bytes == page.precise.analytic.peak_allocated_bytes
    assert sum(r.analytic_bytes for r in categories) == total.analytic_bytes
    assert table.item(len(rows) - 1, 0).text() == f"{total.simulated_bytes / GiB:.2f}"


def test_analytic_terms_map_onto_the_simulated_categories():
    est = estimate(resolve_model("meta-llama/Llama-2-7b-hf"), TrainSetup(method="lora"))
    mapped = analytic_categories(est.breakdown)
    assert list(mapped) == list(CATEGORY_LABELS)
    assert sum(mapped.values()) == est.peak_allocated_bytes
    b = est.breakdown
    assert mapped["parameters"] == b.weights + b.quant_state + b.adapters
    assert mapped["working"] == b.activations + b.logits + b.workspace


def test_the_largest_difference_is_named():
    est = estimate(resolve_model("meta-llama/Llama-2-7b-hf"), TrainSetup(method="lora"))
    mapped = analytic_categories(est.breakdown)
    simulated = {"parameters": mapped["parameters"], "gradients": mapped["gradients"] + GiB // 4,
                 "optimizer_state": mapped["optimizer_state"], "activations": mapped["working"] - GiB // 2,
                 "temporaries": 0}
    rows = compare_categories(simulated, sum(simulated.values()), est)
    assert rows[-1].difference_bytes == GiB // 4  # the total: analytic minus simulated
    assert largest_difference(rows) == ("Largest difference: activations and temporaries, the analytic estimate "
                                        "is 0.50 GiB higher.")


def test_cancel_kills_the_child(page, qtbot):
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: page.precise.cancel_button.isEnabled())
    page.precise.cancel_button.click()
    qtbot.waitUntil(lambda: page.precise.result.text() == "Cancelled.", timeout=10_000)
    assert page.precise.run_button.isEnabled()


def test_unsupported_setups_show_the_reason(page, qtbot):
    page.form.model_box.setEditText("deepseek-ai/DeepSeek-V2-Lite")
    page.recompute()
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: "MoE" in page.precise.result.text(), timeout=60_000)
    text = page.precise.result.text()
    assert text.startswith("error: LoRA/QLoRA on MoE model type 'deepseek_v2' is not supported yet")
    assert "\n" not in text
    assert not page.precise.table.isVisibleTo(page.precise)


def test_mixtral_is_simulated(page, qtbot):
    page.form.model_box.setEditText("mistralai/Mixtral-8x7B-v0.1")
    page.recompute()
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: page.precise.table.isVisibleTo(page.precise), timeout=90_000)
    assert "error" not in page.precise.result.text()
