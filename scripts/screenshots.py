#!/usr/bin/env python3
"""Render the README's picture of every page: `python scripts/screenshots.py`.

The real window, offscreen: Hardware as this machine sees it, Plan with its defaults, and Train,
Runs and Try on a real demo run trained here first (tiny model, ~40 steps on the CPU). Nothing is
written to the user's settings or runs folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "screenshots"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_demo(runs_root: Path) -> Path:
    """A finished demo run, trained by the real trainer in a subprocess (the app never imports torch)."""
    import json
    import subprocess

    demo = runs_root / "demo"
    subprocess.run([sys.executable, "-m", "trainer", "make-demo", "--out", str(demo)], cwd=ROOT, check=True,
                   capture_output=True)
    config = json.loads((demo / "run.json").read_text())
    run_dir = runs_root / "demo-qlora"
    config.update(output_dir=str(run_dir), max_steps=40, save_steps=20, val_split=0.05, eval_steps=10)
    path = runs_root / "demo-qlora.json"
    path.write_text(json.dumps(config))
    subprocess.run([sys.executable, "-m", "trainer", "run", "--config", str(path)], cwd=ROOT, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    return run_dir


def try_demo(page, run_dir: Path, timeout_s: float = 120) -> bool:
    """The Try page on the demo run: loaded, one held-out example asked side by side, scored."""
    import time

    from PySide6.QtWidgets import QApplication

    def wait(done) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        return bool(done())

    page.run_edit.setText(str(run_dir))
    page.device.setCurrentText("cpu")
    page.load()
    if not wait(lambda: page.send_button.isEnabled() and page.example_list.count() > 0):
        return False
    page.measure.setChecked(True)
    page.temperature.setValue(0.0)
    page.max_new.setValue(24)
    page.example_list.setCurrentRow(0)
    page._use_example(page.example_list.item(0))
    page.send()
    if not wait(lambda: bool(page.left.stats.text() and page.right.stats.text())):
        return False
    page.score()
    return wait(lambda: "examples" in page.score_label.text())


def main() -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run_dir = train_demo(tmp_path / "runs")
        _app = QApplication.instance() or QApplication([])  # held: the window needs a live application
        from planner.gui.app import capture
        from planner.gui.state import AppState
        from planner.gui.window import MainWindow

        state = AppState(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        state.set_runs_root(tmp_path / "runs")
        window = MainWindow("plan", state=state)
        window.persist_geometry = False
        window.resize(1280, 860)
        window.show()
        state.open_run.emit(str(run_dir))
        answered = try_demo(window.pages["try"], run_dir)
        for page in ("hardware", "plan", "train", "runs", "try"):
            if page == "try" and not answered:
                print("warning: the Try page did not answer in time; its screenshot shows it so", file=sys.stderr)
            window.show_page(page)
            target = OUT / f"{page}.png"
            # as `gui --screenshot`: the recommendation computed, the replay loaded, the charts painted
            if not capture(window, target):
                print(f"error: cannot write {target}", file=sys.stderr)
                return 2
            print(target.relative_to(ROOT))
        window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
