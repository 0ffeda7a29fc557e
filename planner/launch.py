"""From a plan to a run: whether the app's trainer can run a planned setup, and the run config it
would start from. One place for both, used by "Use this plan", each alternative's "Use" and the
recommender's notes, so nothing on screen offers a run the trainer would silently change.

The mapping itself (and what the trainer cannot run) is the trainer's contract module's:
``trainer.config.fields_of`` / ``why_not_trainable``. Qt-free and torch-free.
"""

from __future__ import annotations

from typing import Any

from planner.options import TrainSetup
from trainer.config import fields_of, why_not_trainable

__all__ = ["accumulation_for", "train_config_fields", "why_not_trainable"]


def accumulation_for(planned_batch: int, micro_batch: int) -> int:
    """Gradient accumulation that keeps the planned batch when a plan runs a smaller micro-batch
    (a larger one already covers it)."""
    return max(1, planned_batch // micro_batch)


def train_config_fields(setup: TrainSetup, model: str, epochs: float,
                        gradient_accumulation_steps: int = 1) -> dict[str, Any]:
    """The TrainConfig fields a planned setup starts the Train page from (the page adds the data
    and the run directory); raises trainer.config.ConfigError when the trainer cannot run it.
    The optimizer in backward steps every micro-batch: it keeps no accumulation."""
    if setup.optimizer_in_backward:
        gradient_accumulation_steps = 1
    return {"model": model, **fields_of(setup), "gradient_accumulation_steps": gradient_accumulation_steps,
            "epochs": epochs}
