"""Which run directory one ``trainer run`` works in, and whether it may: claimed, locked, checked.

Nothing is written before the directory is known to be new, empty or ours, and nothing at all
before its lock is held: two trainers never share a directory, a resume never runs beside the
session it continues, and a refused command leaves every file as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.config import ConfigError, TrainConfig
from trainer.rundir import (
    CONFIG,
    LOCK,
    SUMMARY,
    RunDirError,
    RunLock,
    check_new,
    read_json,
    read_marker,
    remove_written,
    state,
    write_marker,
)


@dataclass
class Session:
    cfg: TrainConfig
    run_dir: Path
    resume: bool
    lock: RunLock
    """Held until the process ends; the caller releases it."""


class AlreadyComplete(Exception):
    """``--resume`` of a run that finished the training it was asked for: nothing to do."""

    def __init__(self, run_dir: Path, steps: int | None) -> None:
        super().__init__(f"{run_dir} is already complete ({steps} steps); to train further, raise max_steps "
                         f"or epochs in {run_dir / CONFIG} and resume again")
        self.steps = steps


def open_new(config_path: str | None) -> Session:
    """A new run from a config file: ``output_dir`` must be new, empty, or a run of ours that never
    completed a step (a run that failed on bad data must not block the fixed config)."""
    if not config_path:
        raise ConfigError("give --config FILE (or --resume RUN_DIR)")
    cfg = TrainConfig.load(config_path)
    run_dir = Path(cfg.output_dir).expanduser()
    problem = check_new(run_dir)
    if problem:
        raise RunDirError(problem)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"output_dir {run_dir}: cannot create it ({exc.strerror or exc})") from None
    lock = RunLock(run_dir).acquire()
    try:
        problem = check_new(run_dir)  # again under the lock: another trainer may have claimed it meanwhile
        if problem:
            raise RunDirError(problem)
        remove_written(run_dir, keep=(LOCK,))  # a run that never trained makes way
        write_marker(run_dir, basis=cfg.basis(), length=cfg.length())
        cfg.dump(run_dir / CONFIG)
    except OSError as exc:
        lock.release()
        raise RunDirError(f"output_dir {run_dir}: cannot write there ({exc.strerror or exc})") from None
    except BaseException:
        lock.release()
        raise
    return Session(cfg, run_dir, False, lock)


def open_resume(resume_dir: str) -> Session:
    """Continue a run: it must be ours, idle, unchanged where its checkpoint depends on the config,
    and not already complete (unless its config now asks for more training)."""
    run_dir = Path(resume_dir).expanduser()
    if state(run_dir) != "ours":
        raise RunDirError(f"--resume {run_dir}: not a run directory of this trainer; give the folder a run was "
                          "started in (its output_dir)")
    lock = RunLock(run_dir).acquire()
    try:
        cfg = TrainConfig.load(run_dir / CONFIG)
        marker = read_marker(run_dir)
        _check_basis(run_dir, cfg, marker.get("basis"))
        summary = read_json(run_dir / SUMMARY)
        final = (run_dir / ("model" if cfg.method == "full" else "adapter")).is_dir()
        asked = marker.get("length")
        if summary.get("status") == "completed" and final and asked in (None, cfg.length()):
            raise AlreadyComplete(run_dir, summary.get("steps"))
        if marker and asked != cfg.length():
            write_marker(run_dir, **{**marker, "length": cfg.length()})
    except BaseException:
        lock.release()
        raise
    return Session(cfg, run_dir, True, lock)


def _check_basis(run_dir: Path, cfg: TrainConfig, basis: object) -> None:
    """Refuse a config.json edited where the checkpoint depends on it, naming the fields."""
    if not isinstance(basis, dict):
        return  # a run of an earlier version recorded none
    now = cfg.basis()
    changed = sorted(k for k in set(now) | set(basis) if now.get(k) != basis.get(k))
    if changed:
        shown = ", ".join(f"{k} {_short(basis.get(k))} -> {_short(now.get(k))}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"{run_dir / CONFIG} was edited since the run started ({shown}{more}); its checkpoint "
                          "depends on these, so put them back or start a new run with --config")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."
