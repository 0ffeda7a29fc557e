"""Unsloth's fused LoRA kernels (``--kernels unsloth``): what a decoder layer keeps for backward
when Unsloth has patched it, in bytes per token.

Read at unslothai/unsloth @ 015bdef0d9 (2026.8.19):

* ``unsloth/kernels/fast_lora.py:69-112``, ``LoRA_MLP``: saves the MLP's input X and the gate and
  up outputs e, g; the activation and the down projection's input are recomputed in backward,
  which computes the down projection's input gradient (one intermediate-wide tensor) and then
  works in place in e, g and X (``:156-200``);
* ``:368-428``, ``LoRA_QKV``: saves only X, the attention norm's output; ``:604-612``, ``LoRA_W``
  (o_proj): its input, the attention's output. The adapters multiply the 16-bit inputs
  (``matmul_lora``): no fp32 copy of any input exists;
* ``unsloth/kernels/rms_layernorm.py:162-206``: each RMSNorm saves its input and 1/rms (fp32 per
  token) and returns the input's dtype;
* ``unsloth/kernels/rope_embedding.py:283``: RoPE rotates Q and K in place;
* ``unsloth/models/llama.py:671-773``: flash-attn, xformers or SDPA keep Q, K, V, the output and
  the log-sum-exp per head; SDPA's (batch, heads, tokens, dim) output is copied by the reshape
  o_proj reads; ``:774-840``: the residual adds keep nothing.

The kernels run for LoRA (not DoRA or the other adapters) without dropout, on dense gated MLPs;
anything else runs peft's modules, counted as such (planner/activations.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import Architecture, Block
from planner.options import TrainSetup
from planner.units import FP32


def fused(block: Block, setup: TrainSetup) -> bool:
    """Whether Unsloth's fused kernels run this layer."""
    return (setup.kernels == "unsloth" and setup.method in ("lora", "qlora") and setup.peft == "lora"
            and not setup.use_dora and setup.lora_dropout == 0 and block.gated and not block.experts)


@dataclass(frozen=True)
class FusedLayer:
    saved: int
    """Bytes per token the layer keeps for backward."""
    backward: int
    """Bytes per token its backward holds beyond them: the incoming gradient and the down
    projection's input gradient."""


def unsloth_layer(arch: Architecture, block: Block, setup: TrainSetup, residual: int) -> FusedLayer:
    """``residual``: the residual stream's bytes per element (the norms' saved inputs)."""
    c, h = setup.compute_bytes, arch.hidden_size
    q_w, kv_w = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    o_w = arch.num_heads * arch.v_head_dim
    norms = 2 * (residual * h + FP32)
    normed = 2 * c * h  # the attention's and the MLP's inputs, kept by LoRA_QKV and LoRA_MLP
    attention = c * (q_w + 2 * kv_w + o_w) + FP32 * arch.num_heads
    if setup.attention != "flash_attention_2":
        attention += c * o_w  # (batch, heads, tokens, dim) reshaped for o_proj: a copy it keeps
    mlp = 2 * c * block.ffn_width
    return FusedLayer(saved=norms + normed + attention + mlp, backward=residual * h + c * block.ffn_width)
