"""From a plan to a run: whether the app's trainer can run a planned setup, and the run config it
would start from. One place for both, used by "Use this plan", each alternative's "Use" and the
recommender's notes, so nothing on screen offers a run the trainer would silently change.

The mapping itself (and what the trainer cannot run) is the trainer's contract module's:
``trainer.config.fields_of`` / ``why_not_trainable``. Qt-free and torch-free.
"""

from __future__ import annotations

from typing import Any

from planner.options import TrainSetup
from planner.stacks import load_stack
from trainer.config import fields_of, why_not_trainable

__all__ = ["stack_note", "train_config_fields", "why_not_trainable"]


def train_config_fields(setup: TrainSetup, model: str, epochs: float) -> dict[str, Any]:
    """The TrainConfig fields a planned setup starts the Train page from (the page adds the data
    and the run directory); raises trainer.config.ConfigError when the trainer cannot run it."""
    return {"model": model, **fields_of(setup), "epochs": epochs}


def stack_note(setup: TrainSetup) -> str | None:
    """What "Use this plan" means for a plan made for another stack (None for this app's own): it
    trains the planned settings with this app's trainer, and what of that stack it does not run."""
    if setup.stack == "hf":
        return None
    stack = load_stack(setup.stack)
    return (f"Planned for {stack.name}. \"Use this plan\" trains these settings with this app's trainer "
            f"(Hugging Face Trainer + peft), not with {stack.name}: the loss, optimizer, accumulation, "
            f"checkpointing and dtypes run as planned; {stack.name}'s own code differs where the estimate says "
            f"it is not modelled: " + "; ".join(stack.not_modelled) + ".")
