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

__all__ = ["train_config_fields", "why_not_trainable"]


def train_config_fields(setup: TrainSetup, model: str, epochs: float) -> dict[str, Any]:
    """The TrainConfig fields a planned setup starts the Train page from (the page adds the data
    and the run directory); raises trainer.config.ConfigError when the trainer cannot run it."""
    return {"model": model, **fields_of(setup), "epochs": epochs}
