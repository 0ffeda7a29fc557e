"""The Trainer that computes the chunked loss (``TrainConfig.loss == "chunked"``); the loss
itself is planner/simulate/chunked_loss.py, which precise mode steps too."""

from __future__ import annotations

import functools
from typing import Any

from trainer.config import TrainConfig


def trainer_class(cfg: TrainConfig) -> Any:
    """``transformers.Trainer``, or its subclass computing the chunked loss (or torchtune's
    chunked output loss)."""
    from transformers import Trainer

    if cfg.loss == "standard":
        return Trainer
    return _chunked_trainer(cfg.loss, cfg.loss_chunk_mib * 2**20)


@functools.cache
def _chunked_trainer(loss: str, chunk_bytes: int) -> Any:
    from transformers import Trainer

    from planner.simulate import chunked_loss

    class ChunkedLossTrainer(Trainer):
        """Training steps use ``chunked_loss.causal_lm_loss`` (``loss: chunked``, by planner/loss.py's
        chunk rule or ``chunk_bytes``) or ``chunked_output_loss`` (``chunked-output``); evaluation
        keeps transformers' loss (no gradients, so its logits cost one (tokens x vocab) buffer and
        its fp32 copy)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inner = self.accelerator.unwrap_model(model)
            # accelerate autocasts the wrapped model's forward; the chunked loss calls the decoder
            # beneath that wrapper, so it enters the same autocast itself (without it fp32 LoRA
            # adapters of a bf16 run compute, and keep their activations, in fp32)
            with self.accelerator.autocast():
                if loss == "chunked-output":
                    return chunked_loss.chunked_output_loss(inner, inputs, num_items_in_batch)
                return chunked_loss.causal_lm_loss(inner, inputs, num_items_in_batch, chunk_bytes)

    return ChunkedLossTrainer
