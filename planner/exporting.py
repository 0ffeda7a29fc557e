"""What each way of exporting a run costs, before it is written: the adapter alone (its base
loaded beside it, its branch computed at every token) or merged into the base (a plain model the
size of the base, no added work per token). Qt-free and torch-free: the Runs page's Export dialog
shows it, ``python -m trainer export`` writes the choice.

Disk: the adapter's own files, and the base's parameters in the dtype the merge writes. Per token:
the time model's FLOPs of the unmerged adapter against the base's forward (planner/cost.py); on a
small model per-layer overheads dominate instead (the demo on a CPU measures +47%,
docs/training.md#export).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.catalog import resolve_model
from planner.cost import flops_per_token
from planner.errors import PlannerError
from trainer.config import ConfigError, TrainConfig, merged_precision, setup_of
from trainer.rundir import TRAINING_STATE, merge_refusal, trained_folder

_WEIGHT_FILES = (".safetensors", ".json")


@dataclass(frozen=True)
class ExportChoice:
    merge: bool
    title: str
    disk_bytes: int | None
    """On disk once written; None when the base cannot be sized (an unknown model)."""
    loading: str
    per_token: str
    unavailable: str | None = None
    """Why this choice cannot be written for this run, or None."""


def export_choices(run_dir: Path) -> tuple[ExportChoice, ...]:
    """The choices for ``run_dir``: one for a full fine-tune (its model), two for an adapter."""
    try:
        cfg = TrainConfig.load(run_dir / "config.json")
    except (ConfigError, OSError, ValueError) as exc:
        raise PlannerError(f"{run_dir}: cannot read its config.json ({exc})") from None
    folder = trained_folder(run_dir, cfg.method == "full")
    if folder is None:
        raise PlannerError(f"{run_dir} has no trained weights yet (no final folder, no complete checkpoint)")
    own = sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_FILES
              and not p.name.startswith(TRAINING_STATE))
    if cfg.method == "full":
        return (ExportChoice(False, "the fine-tuned model", own, "loads alone", "the base model's cost"),)
    precision = merged_precision(cfg)
    refusal = merge_refusal(cfg.peft)
    try:
        spec = resolve_model(cfg.model)
        merged_bytes: int | None = spec.total_params * (2 if precision == "bf16" else 4)
        flops = flops_per_token(spec.arch, setup_of(cfg, precision))
        # the adapter's forward FLOPs: a third of its training's
        extra: float | None = flops.adapters / 3 / flops.forward
    except PlannerError:
        merged_bytes, extra = None, None
    if refusal:
        added = f"{cfg.virtual_tokens} virtual tokens ahead of every prompt"
    elif cfg.peft == "ia3":
        added = "an elementwise scale in a few layers per token"
    elif extra is None:
        added = "the adapter's branch in every adapted layer per token"
    else:
        added = f"+{extra:.1%} of the base's FLOPs per token (its own kernels in every adapted layer)"
    adapter = ExportChoice(False, "the adapter alone (peft layout)", own,
                           f"its base {cfg.model} first, then the adapter on it", added)
    merged = ExportChoice(True, f"merged into the base ({precision})", merged_bytes, "loads alone, a plain model",
                          "no added work: the base model's cost", unavailable=refusal)
    return adapter, merged
