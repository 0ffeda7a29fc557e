"""Export from the Runs page (issue 18 point 2): both choices with their cost before anything is
written, then ``python -m trainer export`` in a child process, whose one-line error shows in the
dialog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.exporting import export_choices

TIMEOUT = 120_000


def test_both_choices_with_their_cost(demo_run: Path):
    adapter, merged = export_choices(demo_run)
    files = [p for p in (demo_run / "adapter").iterdir() if p.suffix in (".safetensors", ".json")]
    assert adapter.disk_bytes == sum(p.stat().st_size for p in files) and not adapter.merge
    # the demo trains in fp32 on the CPU: merged, its 3.5M parameters are 4 bytes each
    from planner.catalog import resolve_model

    cfg = json.loads((demo_run / "config.json").read_text())
    assert merged.merge and merged.disk_bytes == resolve_model(cfg["model"]).total_params * 4
    assert merged.disk_bytes > 5 * adapter.disk_bytes
    assert "% of the base's FLOPs per token" in adapter.per_token and "no added work" in merged.per_token
    assert merged.unavailable is None


def test_a_prompt_tuning_run_cannot_merge_and_says_why(demo_run: Path, tmp_path: Path):
    run = tmp_path / "prompt-run"
    (run / "adapter").mkdir(parents=True)
    cfg = json.loads((demo_run / "config.json").read_text())
    cfg.update(peft="prompt", modules_to_save=[], output_dir=str(run))
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "adapter" / "adapter_config.json").write_text("{}")
    adapter, merged = export_choices(run)
    assert merged.unavailable and "nothing to merge" in merged.unavailable
    assert "20 virtual tokens" in adapter.per_token


def test_a_run_without_weights_is_one_line(tmp_path: Path, demo_run: Path):
    (tmp_path / "config.json").write_text((demo_run / "config.json").read_text())
    with pytest.raises(PlannerError, match="no trained weights yet"):
        export_choices(tmp_path)


def test_the_dialog_exports_the_checked_choice_with_its_card(qtbot, demo_run: Path, tmp_path: Path):
    from planner.gui.runs.export_dialog import ExportDialog, describe

    dialog = ExportDialog(demo_run)
    qtbot.addWidget(dialog, before_close_func=lambda d: d.done(0))
    assert [b.isEnabled() for b in dialog.buttons] == [True, True]
    assert dialog.out_edit.text().endswith("run-adapter")
    dialog.buttons[1].setChecked(True)
    assert dialog.merge and dialog.out_edit.text().endswith("run-merged")
    assert describe(dialog.choices[1]).startswith("On disk: ")
    dialog.buttons[0].setChecked(True)
    out = tmp_path / "export"
    dialog.out_edit.setText(str(out))
    with qtbot.waitSignal(dialog.exported, timeout=TIMEOUT) as written:
        dialog.start()
    assert Path(written.args[0]) == out.resolve()
    assert (out / "adapter_config.json").is_file() and (out / "README.md").is_file()
    # again into the same folder: the trainer refuses in one line, shown in the dialog
    dialog.start()
    qtbot.waitUntil(lambda: dialog.process is None, timeout=TIMEOUT)
    assert "holds a previous export; pass --force" in dialog.status.text()


def test_the_runs_page_opens_it_for_the_selected_run(qtbot, demo_run: Path, tmp_path: Path):
    from PySide6.QtCore import QSettings

    from planner.gui.runs.page import RunsPage
    from planner.gui.state import AppState

    state = AppState(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    state.set_runs_root(demo_run.parent)
    page = RunsPage(state)
    qtbot.addWidget(page)
    try:
        assert page.select_path(demo_run) and page.model_button.isEnabled()
        page.model_button.click()
        assert page.export_dialog is not None and page.export_dialog.isVisible()
        assert page.export_dialog.run_dir == demo_run and len(page.export_dialog.buttons) == 2
        page.export_dialog.done(0)
    finally:
        page.loader.wait()
