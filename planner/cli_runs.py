"""``python -m planner runs``: the runs on this machine, measured against predicted, and the
planner's accuracy on them; ``--csv FILE`` writes them as measurements.csv rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.cli_options import print_json
from planner.errors import PlannerError
from planner.units import GiB

if TYPE_CHECKING:  # planner.runs reads run directories: imported when `runs` runs, not at every start
    from planner.runs import RunSummary


def add_runs_parser(sub: Any) -> None:
    runs = sub.add_parser("runs", help="runs on this machine: measured vs predicted peak, the planner's accuracy")
    runs.add_argument("--root", default=None, metavar="DIR",
                      help="the runs folder (default: ~/finetune-runs, where the app creates runs)")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--csv", default=None, metavar="FILE",
                      help="write the finished runs as rows of resources/reference/measurements.csv")
    runs.add_argument("--force", action="store_true", help="with --csv: replace FILE if it exists")
    runs.set_defaults(func=cmd_runs)


def _run_json(s: RunSummary) -> dict[str, Any]:
    return {"name": s.name, "path": str(s.path), "status": s.status, "model": s.model, "method": s.method,
            "device": s.device, "steps": s.steps, "max_steps": s.max_steps, "final_loss": s.final_loss,
            "peak_alloc_bytes": s.peak_alloc_bytes, "peak_alloc_phase": s.peak_alloc_phase,
            "predicted_peak_bytes": s.predicted_peak_bytes, "predicted_at_peak_bytes": s.predicted_at_peak_bytes,
            "peak_batch": list(s.peak_shape) if s.peak_shape else None, "ratio": s.ratio,
            "peak_measured_bytes": s.peak_measured_bytes, "peak_kind": s.peak_kind, "runtime_s": s.runtime_s,
            "started": s.started, "resumable": s.resumable, "error": s.error}


def _gib(n: int | None) -> str:
    return "-" if not n else f"{n / GiB:.2f} GiB"


def cmd_runs(a: argparse.Namespace) -> int:
    from planner.accuracy import accuracy_json, summary_line, write_csv
    from planner.runs import DEFAULT_RUNS_ROOT, scan_runs

    root = Path(a.root).expanduser() if a.root is not None else DEFAULT_RUNS_ROOT
    if root.exists() and not root.is_dir():  # a folder not made yet simply holds no runs yet
        raise PlannerError(f"--root {root} is not a folder")
    if a.force and a.csv is None:
        raise PlannerError("--force only applies to --csv FILE")
    runs = scan_runs(root)
    if a.csv is not None:
        written = write_csv(runs, a.csv, force=a.force)
        print(f"wrote {written} row(s) to {a.csv}", file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print_json({"root": str(root), "runs": [_run_json(s) for s in runs], "accuracy": accuracy_json(runs)})
        return 0
    if a.csv is not None:
        return 0
    if not runs:
        print(f"no runs in {root}")
        return 0
    print(f"{'run':<28}{'status':<11}{'method':<7}{'peak alloc':>12}{'predicted':>12}{'ratio':>8}")
    for s in runs:
        ratio = f"{s.ratio:.2f}x" if s.ratio is not None else "-"
        print(f"{s.name[:27]:<28}{s.status:<11}{(s.method or '-'):<7}{_gib(s.peak_alloc_bytes):>12}"
              f"{_gib(s.compared_bytes):>12}{ratio:>8}")
    print(summary_line(runs))
    return 0
