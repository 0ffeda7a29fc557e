"""The optimizer step in backward for a run (``TrainConfig.optimizer_in_backward``): the optimizer
the run's ``optim`` names, one per parameter, through planner/simulate/in_backward.py (which
precise mode steps too), handed to transformers' Trainer as ``optimizer_cls_and_kwargs``."""

from __future__ import annotations

from typing import Any


def optimizer_in_backward(args: Any, model: Any) -> tuple[type, dict[str, Any]]:
    """``(class, kwargs)`` for ``Trainer(optimizer_cls_and_kwargs=...)``: the Trainer groups the
    parameters (weight decay or not) and the scheduler drives the per-parameter learning rates."""
    from transformers import Trainer

    from planner.simulate.in_backward import in_backward_class

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if "bitsandbytes" in str(cls) and kwargs.get("optim_bits") == 8:
        # what Trainer.create_optimizer does for its own 8-bit optimizers, which it cannot see here
        import bitsandbytes
        import torch

        manager = bitsandbytes.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                manager.register_module_override(module, "weight", {"optim_bits": 32})
    return in_backward_class(), {"make": lambda groups: cls(groups, **kwargs)}
