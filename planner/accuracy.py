"""How good the planner's predictions were on this machine's own runs, and those runs as measurements.

Qt-free. Every finished run (completed or stopped) that has both a measured and a predicted peak
allocated is one measurement; both numbers are of the same kind (torch.cuda.max_memory_allocated
on a GPU, the trainer's live tensor bytes on the CPU, against the prediction for that device),
never the host RSS. The error is defined once, :func:`error`, as in scripts/validate_estimator.py:

    error = predicted / measured - 1      (negative: the prediction was too low, the run needed more)

:func:`rows_csv` writes the runs in exactly the columns of resources/reference/measurements.csv,
so they can be added to it (or fed to scripts/validate_estimator.py --csv).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from planner.atomic import atomic_write_text
from planner.errors import PlannerError
from planner.options import METHODS
from planner.runs import RunSummary
from planner.units import GiB
from trainer.config import TrainConfig
from trainer.rundir import CONFIG, read_json

FINISHED = ("completed", "stopped")
METHOD_NAMES = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
ERROR_DEFINITION = "predicted / measured peak allocated - 1 (negative: the prediction was too low)"
CSV_COLUMNS = ("id", "source", "framework", "model", "method", "quant", "double_quant", "precision",
               "adapter_dtype", "optimizer", "batch_size", "seq_len", "grad_checkpointing", "attention", "lora_r",
               "lora_targets", "modules_to_save", "num_gpus", "sharding", "offload", "kind", "value", "unit", "gpu",
               "notes")
"""The header of resources/reference/measurements.csv, column for column."""


def error(run: RunSummary) -> float | None:
    """predicted / measured peak allocated - 1 of a finished run; None without both numbers."""
    if run.status not in FINISHED or not run.peak_alloc_bytes or not run.compared_bytes:
        return None
    return run.compared_bytes / run.peak_alloc_bytes - 1


@dataclass(frozen=True)
class Accuracy:
    """One method's (or all runs') prediction errors."""

    count: int
    median_abs_error: float | None
    """Median of |error| over the runs; None when there are none."""
    worst_error: float | None
    """The error with the largest magnitude, signed."""
    worst_run: str | None
    """The run directory's name the worst error belongs to."""
    worst_method: str | None

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "median_abs_error": self.median_abs_error, "worst_error": self.worst_error,
                "worst_run": self.worst_run, "worst_method": self.worst_method}


def measured(runs: Iterable[RunSummary]) -> list[RunSummary]:
    """The runs that count as measurements (finished, both figures), in the order given."""
    return [r for r in runs if error(r) is not None]


def _accuracy(runs: Sequence[RunSummary]) -> Accuracy:
    errors = [(e, r) for r in runs if (e := error(r)) is not None]
    if not errors:
        return Accuracy(0, None, None, None, None)
    worst, run = max(errors, key=lambda pair: abs(pair[0]))
    return Accuracy(len(errors), statistics.median(abs(e) for e, _ in errors), worst, run.name, run.method)


def accuracy(runs: Iterable[RunSummary]) -> dict[str, Accuracy]:
    """Per method (full, lora, qlora) and "all"; a method without runs has count 0."""
    done = measured(runs)
    out = {m: _accuracy([r for r in done if r.method == m]) for m in METHODS}
    out["all"] = _accuracy(done)
    return out


def accuracy_json(runs: Iterable[RunSummary]) -> dict[str, Any]:
    """The ``accuracy`` object of ``python -m planner runs --json``."""
    return {"error": ERROR_DEFINITION, **{k: v.to_json() for k, v in accuracy(runs).items()}}


def fmt_error(e: float) -> str:
    """+7.9% / -3.1%: the sign says which way the prediction missed."""
    return f"{e * 100:+.1f}%"


def summary_line(runs: Iterable[RunSummary]) -> str:
    """One line: "Your runs: 5 with measurements · median |error| 3.1% · worst +7.9% (LoRA)"."""
    a = accuracy(runs)["all"]
    if not a.count or a.median_abs_error is None or a.worst_error is None:
        return "Your runs: none finished with a measured peak allocated yet (nothing to check the plan against)."
    what = "measurement" if a.count == 1 else "measurements"
    method = METHOD_NAMES.get(a.worst_method or "", a.worst_method or "?")
    return (f"Your runs: {a.count} with {what} \u00b7 median |error| {a.median_abs_error * 100:.1f}% \u00b7 "
            f"worst {fmt_error(a.worst_error)} ({method})")


# -- measurements.csv rows ---------------------------------------------------------------------
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
"""What a config.json that leaves a field out runs with."""


def _on_off(v: Any) -> str:
    return "on" if v else "off"


def _list(v: Any) -> str:
    if isinstance(v, str):
        return v
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else ""


def settings(config: Mapping[str, Any], precision: str | None = None,
             shape: tuple[int, int] | None = None) -> dict[str, str]:
    """The setting columns of a measurements.csv row (``model`` to ``offload``) for a run config in
    TrainConfig's field names, its defaults filled in. ``precision``: as the trainer resolved
    "auto"; ``shape``: the micro-batch measured at the peak (padded to its longest sample), else the
    planned one stands."""
    cfg = {**_DEFAULTS, **config}
    method = str(cfg.get("method") or "")
    peft, qlora = method in ("lora", "qlora"), method == "qlora"
    processes = int(cfg.get("num_processes") or 1)
    precision = precision or str(cfg.get("precision") or "")
    rows, length = shape or (cfg.get("batch_size") or "", cfg.get("max_seq_len") or "")
    return {
        "model": str(cfg.get("model") or ""),
        "method": method,
        "quant": str(cfg.get("quant") or "") if qlora else "",
        "double_quant": _on_off(cfg.get("double_quant")) if qlora else "",
        "precision": "" if precision == "auto" else precision,
        "adapter_dtype": str(cfg.get("adapter_dtype") or "") if peft else "",
        "optimizer": str(cfg.get("optimizer") or ""),
        "batch_size": str(rows),
        "seq_len": str(length),
        "grad_checkpointing": _on_off(cfg.get("grad_checkpointing")),
        "attention": str(cfg.get("attention") or ""),
        "lora_r": str(cfg.get("lora_r") or "") if peft else "",
        "lora_targets": _list(cfg.get("lora_targets")) if peft else "",
        "modules_to_save": _list(cfg.get("modules_to_save")),
        "num_gpus": str(processes),
        "sharding": "none" if processes == 1 else str(cfg.get("sharding") or ""),
        "offload": "none",
    }


def row(run: RunSummary) -> dict[str, str]:
    """One measurements.csv row (column -> text) for a run, its settings from its config.json."""
    cfg = read_json(run.path / CONFIG)
    cfg = {**cfg, "model": run.model or cfg.get("model"), "method": run.method or cfg.get("method")}
    cpu = run.device == "cpu"
    predicted = (run.compared_bytes or 0) / GiB
    phase = f"; peak in {run.peak_alloc_phase}" if run.peak_alloc_phase else ""
    several = int(cfg.get("num_processes") or 1) > 1
    what = ("CPU run: live tensor bytes of the trainer's tensor meter, not a GPU's" if cpu
            else "torch.cuda.max_memory_allocated" + (" per GPU (the fullest)" if several else ""))
    return {
        "id": run.name,
        "source": f"finetune-planner run {run.name}",
        "framework": "hf+peft",
        **settings(cfg, run.precision, run.peak_shape),
        "kind": "allocated",
        "value": f"{(run.peak_alloc_bytes or 0) / GiB:.4f}",
        "unit": "GiB",
        "gpu": "cpu" if cpu else (run.gpu or ""),
        "notes": f"{what}{phase}; predicted {predicted:.4f} GiB ({fmt_error(error(run) or 0.0)})",
    }


def rows_csv(runs: Iterable[RunSummary]) -> str:
    """The header of measurements.csv and one row per finished run with both figures."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in measured(runs):
        writer.writerow(row(run))
    return out.getvalue()


def write_csv(runs: Iterable[RunSummary], path: Path | str, force: bool = False) -> int:
    """Write :func:`rows_csv` to ``path`` atomically; returns the rows written. An existing file is
    replaced only with ``force`` (PlannerError otherwise, one line), a folder never."""
    target = Path(path)
    if target.is_dir():
        raise PlannerError(f"{target} is a folder; give a file name for the CSV")
    if target.exists() and not force:
        raise PlannerError(f"{target} exists; pass --force to replace it")
    runs = measured(runs)
    text = rows_csv(runs)
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        raise PlannerError(f"cannot write {target}: {exc.strerror or exc}") from None
    return len(runs)


GOOD, FAIR = 0.10, 0.25
"""Ratio grades: within 10% of the prediction is good, within 25% fair, beyond that poor."""


def grade(ratio: float | None) -> str | None:
    """good | fair | poor by |ratio - 1| (:data:`GOOD`, :data:`FAIR`); None without a ratio."""
    if ratio is None:
        return None
    miss = abs(ratio - 1)
    return "good" if miss <= GOOD + 1e-9 else "fair" if miss <= FAIR + 1e-9 else "poor"
