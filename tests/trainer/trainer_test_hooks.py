"""Test-only trainer callbacks, loaded through ``FINETUNE_TRAINER_PLUGIN`` (trainer/plugins.py):
production code never imports this file. A test switches them on in the run config's ``extra``:

``test_oom_at_step``: raise torch.OutOfMemoryError at that step (or ``{"step", "rank"}``: on that
rank only). ``test_command_at_step``: ``{"step": N, "command": "stop"|"cancel"|"checkpoint"}``
sends the command through the queue stdin feeds, at a deterministic step.
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

    class Hooks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if oom_at is not None and state.global_step >= int(oom_at):
                import torch

                raise torch.OutOfMemoryError("out of memory (test hook)")
            if command_at and state.global_step == int(command_at["step"]):
                commands.put(command_at["command"])

    return [Hooks()] if (oom_at is not None or command_at) else []
