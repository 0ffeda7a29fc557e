"""The Plan page's Precise check runs precise mode in a child process (torch never enters the app)."""

import sys

import pytest
from PySide6.QtCore import QSettings

from planner.gui.plan_page import PlanPage
from planner.gui.state import AppState


@pytest.fixture
def page(qtbot, tmp_path):
    p = PlanPage(AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(p)
    p.model_box.setEditText("Qwen/Qwen2.5-0.5B")
    p.seq_spin.setValue(256)
    p.recompute()
    return p


def test_precise_check_compares_with_the_estimate(page, qtbot):
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: "Analytic estimate" in page.precise.result.text(), timeout=120_000)
    text = page.precise.result.text()
    assert "Simulated peak allocated" in text and "from the simulation" in text
    assert "torch" not in sys.modules  # it ran in a child process


def test_cancel_kills_the_child(page, qtbot):
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: page.precise.cancel_button.isEnabled())
    page.precise.cancel_button.click()
    qtbot.waitUntil(lambda: page.precise.result.text() == "Cancelled.", timeout=10_000)
    assert page.precise.run_button.isEnabled()


def test_unsupported_setups_show_the_reason(page, qtbot):
    page.form.method_box.setCurrentText("qlora")
    page.recompute()
    page.precise.run_button.click()
    qtbot.waitUntil(lambda: "QLoRA" in page.precise.result.text(), timeout=60_000)
