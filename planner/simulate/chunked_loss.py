"""The chunked loss (``TrainConfig.loss == "chunked"``): LM head and cross-entropy chunk by chunk.

Shared by the trainer (trainer/chunked_loss.py, its Trainer subclass) and precise mode, which
steps this very function on the meta device (one implementation, like ``moe_layout``).

The decoder runs without its LM head; an autograd function then takes the final hidden states
and, per chunk of tokens (planner/loss.py's rule), computes the head's logits with the model's
own head module (LoRA on ``lm_head``, peft's ``ModulesToSaveWrapper`` and tied embeddings work
as in the model), upcasts them to fp32, applies Gemma 2's logit softcap when the config has one,
and takes the cross-entropy and its gradients at once. Only one chunk's logits are ever alive;
backward hands the stored gradients to autograd, so parameter gradients arrive the usual way.

The loss is normalised as transformers' ``ForCausalLMLoss``: summed over the labelled tokens and
divided by ``num_items_in_batch`` (the Trainer's count over the accumulated batch), or by this
batch's labelled tokens when it is not given.

On CUDA with Liger-Kernel installed (``pip install .[liger]``), a plain-``nn.Linear`` head goes
through its fused Triton kernel instead (:func:`fused_kernel`): the same chunking rule and loss.

References: Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training", 2024
(arXiv:2410.10989), fused linear cross-entropy; transformers ``loss/loss_utils.py``.
"""

from __future__ import annotations

import functools
from typing import Any

from planner.loss import loss_chunk_tokens
from trainer.config import ConfigError

IGNORE_INDEX = -100
"""transformers' ``ignore_index``: the label of a token outside the loss (prompt, padding)."""


def lm_parts(model: Any) -> tuple[Any, Any, Any]:
    """(decoder, LM head, config) of a causal LM, plain or wrapped by peft. The decoder returns the
    final hidden states (after the final norm); the head is the module the model itself calls."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    head = base.get_output_embeddings()
    if decoder is None or decoder is base or head is None:
        raise ConfigError(f"loss: chunked needs a causal LM with a decoder and an LM head; "
                          f"{type(base).__name__} has none; use loss standard", "loss")
    return decoder, head, base.config


def causal_lm_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, chunk_bytes: int = 0) -> Any:
    """The training loss of ``model`` on a batch with ``labels``, as transformers computes it
    (labels shifted by one, or the collator's ``shift_labels``), the logits never whole.
    ``chunk_bytes``: planner/loss.py's byte budget per chunk (0: its own rule)."""
    hidden, head, shift, softcap = _final_hidden(model, inputs)
    return chunked_cross_entropy(hidden, head, shift, num_items_in_batch, softcap, chunk_bytes)


def chunked_output_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """torchtune's LinearCrossEntropyLoss, for precise mode (planner/loss.py, ``chunked-output``):
    the LM head on OUTPUT_CHUNKS token chunks, each chunk's logits upcast to fp32 for
    ``cross_entropy`` under plain autograd, so every chunk's fp32 log-probabilities stay saved for
    backward. Summed over labelled tokens and divided by ``num_items_in_batch`` (this batch's
    labelled tokens when None), as transformers' loss is."""
    import torch.nn.functional as F

    from planner.loss import OUTPUT_CHUNKS

    hidden, head, shift, softcap = _final_hidden(model, inputs)
    flat, targets = hidden.reshape(-1, hidden.shape[-1]), shift.reshape(-1).to(hidden.device)
    total = 0
    for chunk, chunk_targets in zip(flat.tensor_split(OUTPUT_CHUNKS), targets.tensor_split(OUTPUT_CHUNKS)):
        logits = head(chunk)
        if softcap is not None:
            logits = torch_tanh_softcap(logits, softcap)
        total = total + F.cross_entropy(logits.float(), chunk_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    divisor = (targets != IGNORE_INDEX).sum() if num_items_in_batch is None else num_items_in_batch
    return total / divisor


def torch_tanh_softcap(logits: Any, softcap: float) -> Any:
    import torch

    return torch.tanh(logits / softcap) * softcap


def _final_hidden(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any, float | None]:
    """(final hidden states, LM head, shifted labels, logit softcap) of ``model`` on ``inputs``."""
    import torch.nn.functional as F

    decoder, head, config = lm_parts(model)
    if getattr(config, "output_router_logits", False):
        raise ConfigError("loss: chunked does not add the MoE router's auxiliary loss "
                          "(output_router_logits is on); use loss standard", "loss")
    features = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    hidden = decoder(**features, use_cache=False).last_hidden_state
    shift = inputs.get("shift_labels")
    if shift is None:
        shift = F.pad(inputs["labels"], (0, 1), value=IGNORE_INDEX)[..., 1:]
    return hidden, head, shift, getattr(config, "final_logit_softcapping", None)


def chunked_cross_entropy(hidden: Any, head: Any, labels: Any, num_items_in_batch: Any = None,
                          softcap: float | None = None, chunk_bytes: int = 0) -> Any:
    """``cross_entropy(head(hidden), labels)`` summed over labelled tokens and divided by
    ``num_items_in_batch`` (this batch's labelled tokens when None), one chunk at a time.

    ``hidden``: (..., H) final hidden states; ``labels``: (...), already shifted, -100 outside the
    loss; ``head``: the LM head module, whose trainable parameters receive their gradients."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    targets = labels.reshape(-1).to(flat.device)
    if num_items_in_batch is None:
        divisor: Any = (targets != IGNORE_INDEX).sum()
    else:
        divisor = num_items_in_batch
    fused = None if chunk_bytes else fused_kernel(flat, head, softcap)  # Liger sizes its own chunks
    if fused is not None:
        return fused(head.weight, flat, targets, head.bias) / divisor
    params = [p for p in head.parameters() if p.requires_grad]
    return _function().apply(flat, targets, divisor, head, softcap, chunk_bytes, *params)


def on_cuda(tensor: Any) -> bool:
    return bool(tensor.is_cuda)


def fused_kernel(hidden: Any, head: Any, softcap: float | None) -> Any:
    """Liger-Kernel's fused linear cross-entropy (summed; the same chunking, in Triton), where it
    computes exactly this loss; else None. It needs CUDA and the package (the ``liger`` extra,
    which needs Triton), and it reads ``head.weight`` itself: a head with LoRA or peft's
    ``ModulesToSaveWrapper`` (anything but a plain ``nn.Linear``) computes more than that, and an
    older Liger without ``softcap`` cannot apply Gemma 2's."""
    import torch

    if not on_cuda(hidden) or type(head) is not torch.nn.Linear:
        return None
    return _liger_loss(softcap)


@functools.cache
def _liger_loss(softcap: float | None) -> Any:
    """The Liger loss module for ``softcap``, built once (every training step asks), or None."""
    import inspect

    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    options: dict[str, Any] = {"ignore_index": IGNORE_INDEX, "reduction": "sum"}
    if softcap is not None:
        if "softcap" not in inspect.signature(LigerFusedLinearCrossEntropyLoss).parameters:
            return None
        options["softcap"] = softcap
    return LigerFusedLinearCrossEntropyLoss(**options)


@functools.cache
def _function() -> Any:
    import torch
    import torch.nn.functional as F

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """Forward computes the loss and every gradient chunk by chunk; backward scales them."""

        @staticmethod
        def forward(ctx, hidden, targets, divisor, head, softcap, chunk_bytes, *params):
            vocab = getattr(head, "out_features", None) or head.weight.shape[0]
            tokens = hidden.shape[0]
            step = loss_chunk_tokens(tokens, vocab, hidden.shape[-1], chunk_bytes)
            divisor = divisor.to(hidden.device) if torch.is_tensor(divisor) else divisor
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.zeros_like(hidden) if hidden.requires_grad else None
            grad_params = [torch.zeros_like(p) for p in params]
            for start in range(0, tokens, step):
                chunk_targets = targets[start:start + step]
                if not chunk_targets.is_meta and not bool((chunk_targets != IGNORE_INDEX).any()):
                    continue  # no labelled token: no loss and zero gradients (meta: no labels to read)
                chunk = hidden[start:start + step].detach().requires_grad_(grad_hidden is not None)
                with torch.enable_grad():
                    logits = head(chunk)
                    if softcap is not None:  # Gemma 2: before the loss, in the model's dtype
                        logits = torch_tanh_softcap(logits, softcap)
                    loss = F.cross_entropy(logits.float(), chunk_targets, ignore_index=IGNORE_INDEX,
                                           reduction="sum") / divisor
                    wrt = ([chunk] if grad_hidden is not None else []) + list(params)
                    grads = torch.autograd.grad(loss, wrt) if wrt else ()
                del logits  # the chunk's logits and their graph go before the next chunk's
                total += loss.detach()
                if grad_hidden is not None:
                    grad_hidden[start:start + step] = grads[0]
                for buffer, grad in zip(grad_params, grads[1 if grad_hidden is not None else 0:]):
                    buffer += grad
                grads = grad = None  # else this chunk's head gradient lives on beside the next one's
            # kept on ctx, not saved for backward: backward scales them in place and lets go, so a
            # full lm_head's gradient never exists twice (neither input nor output: no cycle)
            ctx.grads = grad_hidden, grad_params
            return total

        @staticmethod
        def backward(ctx, grad_out):
            grad_hidden, grad_params = ctx.grads
            ctx.grads = None
            # a 0-dim fp32 factor keeps each gradient in its own dtype
            for grad in ([grad_hidden] if grad_hidden is not None else []) + grad_params:
                grad.mul_(grad_out)
            return (grad_hidden, None, None, None, None, None, *grad_params)

    return ChunkedLinearCrossEntropy
