"""Test-only trainer callbacks, loaded through ``FINETUNE_TRAINER_PLUGIN`` (trainer/plugins.py):
production code never imports this file. A test switches them on in the run config's ``extra``:

``test_oom_at_step``: raise torch.OutOfMemoryError at that step (or ``{"step", "rank"}``: on that
rank only). ``test_command_at_step``: ``{"step": N, "command": "stop"|"cancel"|"checkpoint"}``
sends the command through the queue stdin feeds, at a deterministic step. ``test_logits_to``:
``{"path": FILE, "input_ids": [[...]]}`` saves the trained model's logits for those ids (eval
mode, no grad) to FILE with torch.save when training ends, before the run saves its adapter: what
the saved adapter must reproduce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLUGIN = f"{Path(__file__).resolve()}:callbacks"
"""The value of FINETUNE_TRAINER_PLUGIN that loads these hooks."""


def callbacks(cfg: Any, commands: Any) -> list[Any]:
    from transformers import TrainerCallback

    oom_at = cfg.extra.get("test_oom_at_step")
    if isinstance(oom_at, dict):  # {"step": N, "rank": R}: only that rank runs out
        from trainer.distributed import rank

        oom_at = oom_at["step"] if rank() == oom_at["rank"] else None
    command_at = cfg.extra.get("test_command_at_step")
    logits_to = cfg.extra.get("test_logits_to")

    class Hooks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if oom_at is not None and state.global_step >= int(oom_at):
                import torch

                raise torch.OutOfMemoryError("out of memory (test hook)")
            if command_at and state.global_step == int(command_at["step"]):
                commands.put(command_at["command"])

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if not logits_to:
                return
            import torch

            was_training = model.training
            model.eval()
            with torch.no_grad():
                logits = model(input_ids=torch.tensor(logits_to["input_ids"], device=model.device)).logits
            model.train(was_training)
            torch.save(logits.float().cpu(), logits_to["path"])

    return [Hooks()] if (oom_at is not None or command_at or logits_to) else []
