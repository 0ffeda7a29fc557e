#!/usr/bin/env python3
"""Figures for the desktop app (offscreen Qt; the same script runs on a desktop):

1. start-up: launching ``python -m planner gui`` until the first frame is painted;
2. Plan page recompute latency after a change (median);
3. chart frame time with 100k points per curve (downsampling + clip to view, as the pages use);
4. idle CPU of the running app on the Hardware page (1 Hz sampling), over a few seconds.

    python scripts/bench_gui.py [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PROBE = """
import sys, time
t0 = time.perf_counter()
from PySide6.QtCore import QSettings, QTimer
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[1])
from PySide6.QtWidgets import QApplication
app = QApplication([])
from planner.gui.window import MainWindow
w = MainWindow(sys.argv[2])
w.show()
def painted():
    print(f"{time.perf_counter() - t0:.3f}", flush=True)
    if float(sys.argv[3]) > 0:
        import resource
        before = resource.getrusage(resource.RUSAGE_SELF)
        def done():
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(f"{cpu / float(sys.argv[3]):.4f}", flush=True)
            app.quit()
        QTimer.singleShot(int(float(sys.argv[3]) * 1000), done)
    else:
        app.quit()
QTimer.singleShot(0, painted)
app.exec()
print("torch" in sys.modules, flush=True)
"""


def run_probe(page: str, idle_s: float) -> list[str]:
    with tempfile.TemporaryDirectory() as settings:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, settings, page, str(idle_s)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        out.append(f"{time.perf_counter() - t0:.3f}")
        return out


def plan_recompute_ms() -> float:
    from PySide6.QtCore import QSettings, QSignalBlocker
    from PySide6.QtWidgets import QApplication

    from planner.gui.plan.page import PlanPage
    from planner.gui.state import AppState

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        page = PlanPage(AppState(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)))
        times = []
        for seq in (1024, 2048, 4096, 8192, 2048, 1024, 4096):
            with QSignalBlocker(page.form.seq_spin):
                page.form.seq_spin.setValue(seq)
            page.recommender.wait()  # an idle app: no recommendation running in the background
            t0 = time.perf_counter()
            page.recompute()
            app.processEvents()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def frame_ms(points: int = 100_000, frames: int = 30) -> float:
    import numpy as np
    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    plot = pg.PlotWidget()
    plot.resize(900, 400)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    curves = [plot.plot(pen=pg.mkPen(c)) for c in ("b", "r", "g")]
    plot.show()
    x = np.arange(points, dtype=float)
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        for k, curve in enumerate(curves):
            curve.setData(x, np.sin(x / 1000 + i / 10 + k) + 0.01 * k)
        plot.repaint()
        app.processEvents()
        times.append(time.perf_counter() - t0)
    plot.close()
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    args = ap.parse_args()
    starts = [run_probe("plan", 0) for _ in range(5)]
    first_frame = statistics.median(float(s[0]) for s in starts)
    torch_loaded = any(s[1] == "True" for s in starts)
    print(f"start-up to first frame (Plan page): {first_frame:.2f} s median of 5 "
          f"(process wall incl. exit {statistics.median(float(s[-1]) for s in starts):.2f} s); "
          f"torch imported: {torch_loaded}")
    print(f"Plan recompute after a change: {plan_recompute_ms():.1f} ms median")
    print(f"chart frame, 3 curves x 100k points: {frame_ms():.1f} ms median (10 Hz needs < 100 ms)")
    idle = run_probe("hardware", args.idle_seconds)
    print(f"idle CPU on the Hardware page: {float(idle[1]) * 100:.2f}% of one core over {args.idle_seconds:g} s")


if __name__ == "__main__":
    main()
