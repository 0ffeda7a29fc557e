"""The optimizer step in backward: one optimizer per parameter, stepped by the hook torch runs
once that parameter's gradient is complete (``Tensor.register_post_accumulate_grad_hook``), the
gradient freed right after; so the gradients of a full fine-tuning never exist all at once.

The idea of torchtune's ``optimizer_in_bwd`` (Lv et al., 2023, "Full Parameter Fine-tuning for
Large Language Models with Limited Resources", LOMO), on any torch optimizer. What it rules out:
gradient accumulation (each backward steps) and clipping by the global norm (no moment has every
gradient). Shared by the trainer, which hands :func:`in_backward_class` to transformers' Trainer
(``optimizer_cls_and_kwargs``), and precise mode, which steps it on the meta device.

The wrapper's ``param_groups`` are the per-parameter optimizers' own group dicts, so a learning
rate scheduler driving the wrapper reaches every one of them; its ``step`` and ``zero_grad`` do
nothing (backward did both); its state dict holds each parameter's optimizer state, so a
checkpoint resumes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


@functools.cache
def in_backward_class() -> type:
    import torch

    class OptimizerInBackward(torch.optim.Optimizer):
        """``OptimizerInBackward(param_groups, make=lambda groups: torch.optim.AdamW(groups, lr=...))``."""

        def __init__(self, params: Any, make: Callable[[list[dict[str, Any]]], Any]) -> None:
            groups = list(params)
            if groups and not isinstance(groups[0], dict):
                groups = [{"params": groups}]
            self.per_param: dict[Any, Any] = {}
            for group in groups:
                options = {k: v for k, v in group.items() if k != "params"}
                for param in group["params"]:
                    if param.requires_grad:
                        self.per_param[param] = make([{"params": [param], **options}])
            if not self.per_param:
                raise ValueError("optimizer in backward: no trainable parameter")
            first = next(iter(self.per_param.values()))
            super().__init__(list(self.per_param), dict(first.defaults))
            self.param_groups = [opt.param_groups[0] for opt in self.per_param.values()]
            self.handles = [p.register_post_accumulate_grad_hook(self._step) for p in self.per_param]

        @property
        def optimizers(self) -> list[Any]:
            return list(self.per_param.values())

        def _step(self, param: Any) -> None:
            self.per_param[param].step()
            param.grad = None

        def step(self, closure: Any = None) -> Any:
            return closure() if closure is not None else None  # each parameter stepped in backward

        def zero_grad(self, set_to_none: bool = True) -> None:
            pass  # each gradient freed in backward

        def state_dict(self) -> dict[str, Any]:
            return {"per_parameter": [opt.state_dict() for opt in self.per_param.values()]}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            saved = state_dict["per_parameter"]
            if len(saved) != len(self.per_param):
                raise ValueError(f"optimizer in backward: the checkpoint has {len(saved)} parameters' state, "
                                 f"this model {len(self.per_param)}")
            for opt, state in zip(self.per_param.values(), saved):
                opt.load_state_dict(state)

    return OptimizerInBackward
