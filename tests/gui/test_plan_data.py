"""The Plan page with the user's data file (issue 19: packing and padding change the time): the
file is tokenized off the GUI thread by the trainer's own code, the recommendation and the Time and
cost tab then count its padding, packing is carried to "Use this plan", and a bad file is one
message beside its field."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from planner.catalog import resolve_model  # noqa: E402
from planner.gui.plan.extras import cost_rows  # noqa: E402
from planner.gui.plan.model import FormValues  # noqa: E402
from planner.gui.plan.page import PlanPage  # noqa: E402
from planner.gui.window import MainWindow  # noqa: E402
from planner.launch import train_config_fields  # noqa: E402
from planner.samples import SampleLengths  # noqa: E402


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    return w


@pytest.fixture
def page(window) -> PlanPage:
    return window.pages["plan"]


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
    sent = []
    window.state.plan_to_train.connect(sent.append)
    page.use_plan()
    assert sent[-1]["packing"] is True and sent[-1]["dataset"] == str(varied_data)  # the data planned with
    train = window.pages["train"].form
    assert train.dataset_edit.text() == str(varied_data) and train.base["packing"] is True


def test_a_missing_data_file_is_said_beside_its_field(page, qtbot, demo_folder, tmp_path):
    page.form.set_values(FormValues(model=str(demo_folder / "model"), data=str(tmp_path / "none.jsonl")))
    qtbot.waitUntil(lambda: not page.form.errors["data"].isHidden(), timeout=30_000)
    text = page.form.errors["data"].text()
    assert text.startswith("Data set file") and "no such file" in text
