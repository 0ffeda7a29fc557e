"""A decoder-only transformer described by the shapes of its modules.

Everything the estimator needs (parameter counts, LoRA sizes, activation widths) is derived
from this one description, so full, LoRA and QLoRA can never disagree about the model.
The module names are the ones transformers uses, because LoRA targets are given by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What a Linear does in the layer: decides which activations exist and what "all-linear" hits.
ROLES = ("attn", "mlp", "expert", "shared", "router")


@dataclass(frozen=True)
class Linear:
    """One ``nn.Linear`` (or a bank of identical ones, for MoE experts)."""

    name: str
    """Module name as peft matches it, e.g. ``q_proj`` or ``c_attn``."""
    d_in: int
    d_out: int
    bias: bool = False
    copies: int = 1
    """Identical instances per layer: the routed experts of an MoE layer."""
    role: str = "attn"

    @property
    def weight_params(self) -> int:
        return self.d_in * self.d_out * self.copies

    @property
    def bias_params(self) -> int:
        return self.d_out * self.copies if self.bias else 0


@dataclass(frozen=True)
class Block:
    """One kind of decoder layer, repeated ``count`` times."""

    count: int
    linears: tuple[Linear, ...]
    norm_params: int
    """All normalisation weights and biases in the layer (RMSNorm, LayerNorm, q/k norms)."""
    norms: int
    """How many full-width (hidden-size) norms run per token: each saves activations."""
    ffn_width: int
    """Intermediate width a token passes through, summed over the experts it is routed to."""
    gated: bool = True
    """SwiGLU/GeGLU (gate, up, down) rather than a plain two-matrix MLP."""
    experts: int = 0
    experts_per_token: int = 0

    @property
    def params(self) -> int:
        return self.norm_params + sum(lin.weight_params + lin.bias_params for lin in self.linears)


@dataclass(frozen=True)
class Architecture:
    """A causal LM: embeddings, decoder blocks, final norm, LM head."""

    model_type: str
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    """Width of one query/key head."""
    v_head_dim: int
    """Width of one value head (differs from ``head_dim`` under MLA)."""
    blocks: tuple[Block, ...]
    tie_word_embeddings: bool
    final_norm_params: int
    lm_head_bias: bool = False
    norm_kind: str = "rms"
    """``rms`` (computed in fp32 by transformers) or ``layer`` (nn.LayerNorm)."""
    max_position_embeddings: int | None = None
    logit_softcap: bool = False
    """Final logits pass through ``cap * tanh(logits / cap)`` (Gemma 2): tanh keeps its output."""
    assumptions: tuple[str, ...] = field(default=(), compare=False)

    @property
    def num_layers(self) -> int:
        return sum(b.count for b in self.blocks)

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters the LM head adds beyond the embeddings (0 weight params when tied)."""
        weight = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return weight + (self.vocab_size if self.lm_head_bias else 0)

    @property
    def layer_params(self) -> int:
        return sum(b.count * b.params for b in self.blocks)

    @property
    def linear_weight_params(self) -> int:
        """Weights of the decoder Linears: what 4-bit/8-bit quantization replaces (MoE routers
        are transformers' own modules, not ``nn.Linear``: left alone)."""
        return sum(b.count * lin.weight_params for b in self.blocks for lin in b.linears if lin.role != "router")

    @property
    def total_params(self) -> int:
        return self.embed_params + self.layer_params + self.final_norm_params + self.lm_head_params

    @property
    def is_moe(self) -> bool:
        return any(b.experts for b in self.blocks)

    def linear_names(self) -> set[str]:
        """Names LoRA can target (an MoE router is not an ``nn.Linear``)."""
        return {lin.name for b in self.blocks for lin in b.linears if lin.role != "router"}

    def largest_linear(self) -> Linear:
        return max((lin for b in self.blocks for lin in b.linears), key=lambda lin: lin.d_in * lin.d_out)
