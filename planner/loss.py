"""The loss: how the LM head and cross-entropy are computed, and the one chunking rule both the
trainer's chunked loss and the estimator use.

``standard``: transformers' ``ForCausalLMLoss``: the whole (tokens x vocab) logits, an fp32 copy,
log-softmax and its gradient, all alive at the start of backward.

``chunked``: LM head and cross-entropy computed chunk by chunk over tokens, each chunk's
gradients (of the hidden states and of the head's trainable weights) produced at once and the
chunk freed; the idea of Liger-Kernel's fused linear cross-entropy (Hsu et al., 2024,
arXiv:2410.10989), which sizes chunks so one chunk's logits are about as large as the hidden
states: tokens / ceil(vocab / hidden) tokens per chunk. Unsloth's fused loss chunks the same way
but by a byte budget for one chunk's fp32 logits (``--loss-chunk-mib``).

``chunked-output``: torchtune's ``LinearCrossEntropyLoss``: the LM head runs on
:data:`OUTPUT_CHUNKS` token chunks, each upcast to fp32 for ``cross_entropy``, whose fp32
log-probabilities stay saved for backward: the whole fp32 log-softmax, but no fp32 copy of the
logits and no whole gradient at once.
"""

from __future__ import annotations

import math

LOSSES = ("standard", "chunked", "chunked-output")
OUTPUT_CHUNKS = 8
"""torchtune's ``num_output_chunks`` (torchtune/modules/loss/cross_entropy_loss.py:36 @ bd2a0fc7c)."""


def loss_chunk_tokens(tokens: int, vocab_size: int, hidden_size: int, cap_bytes: int = 0) -> int:
    """Tokens per chunk of the chunked loss: ``ceil(tokens / ceil(vocab / hidden))``, at least 1;
    with ``cap_bytes``, as many as keep one chunk's fp32 logits within it (Unsloth's rule)."""
    if cap_bytes:
        return max(1, min(tokens, cap_bytes // (vocab_size * 4)))
    return max(1, math.ceil(tokens / max(1, math.ceil(vocab_size / hidden_size))))
