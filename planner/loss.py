"""The loss: how the LM head and cross-entropy are computed, and the one chunking rule both the
trainer's chunked loss and the estimator use.

``standard``: transformers' ``ForCausalLMLoss``: the whole (tokens x vocab) logits, an fp32 copy,
log-softmax and its gradient, all alive at the start of backward.

``chunked``: LM head and cross-entropy computed chunk by chunk over tokens, each chunk's
gradients (of the hidden states and of the head's trainable weights) produced at once and the
chunk freed; the idea of Liger-Kernel's fused linear cross-entropy (Hsu et al., 2024,
arXiv:2410.10989), which sizes chunks so one chunk's logits are about as large as the hidden
states: tokens / ceil(vocab / hidden) tokens per chunk.
"""

from __future__ import annotations

import math

LOSSES = ("standard", "chunked")


def loss_chunk_tokens(tokens: int, vocab_size: int, hidden_size: int) -> int:
    """Tokens per chunk of the chunked loss: ``ceil(tokens / ceil(vocab / hidden))``, at least 1."""
    return max(1, math.ceil(tokens / max(1, math.ceil(vocab_size / hidden_size))))
