"""Hugging Face ``config.json`` -> :class:`Architecture`.

The catalog stores configs in this same format, so a user's own ``config.json`` and a catalog
entry go through one code path. Each family lists its modules with the names transformers
gives them; anything unknown falls back to the generic decoder and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import planner.catalog.config_fields as fields
from planner.catalog.arch import Architecture, Block, Linear
from planner.errors import PlannerError

Config = dict[str, Any]


def _get(cfg: Config, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


class _Dims:
    """The fields every decoder shares, read once with their aliases."""

    def __init__(self, cfg: Config):
        self.h = fields.size(cfg, "hidden_size", "n_embd", "d_model")
        self.layers = fields.size(cfg, "num_hidden_layers", "n_layer", "num_layers")
        self.heads = fields.size(cfg, "num_attention_heads", "n_head", "num_heads")
        self.kv = fields.size(cfg, "num_key_value_heads", "num_kv_heads", default=self.heads)
        self.hd = fields.head_dim(cfg, self.h, self.heads)
        self.vocab = fields.size(cfg, "vocab_size", "padded_vocab_size")
        self.ff = fields.size(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * self.h)


def _attention(d: _Dims, qkv_bias: bool = False, o_bias: bool = False) -> tuple[Linear, ...]:
    q, kv = d.heads * d.hd, d.kv * d.hd
    return (
        Linear("q_proj", d.h, q, qkv_bias),
        Linear("k_proj", d.h, kv, qkv_bias),
        Linear("v_proj", d.h, kv, qkv_bias),
        Linear("o_proj", q, d.h, o_bias),
    )


GATED_NAMES = ("gate_proj", "up_proj", "down_proj")
EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2")}
"""(gate, up, down) of one routed expert, where the checkpoint names them otherwise than
``GATED_NAMES``: the per-expert modules the trainer builds (planner/simulate/moe_layout.py) and LoRA
targets carry these names."""


def _gated_mlp(h: int, ff: int, bias: bool = False, role: str = "mlp", copies: int = 1,
               prefix: str = "", names: tuple[str, str, str] = GATED_NAMES) -> tuple[Linear, ...]:
    gate, up, down = names
    return (
        Linear(prefix + gate, h, ff, bias, copies, role),
        Linear(prefix + up, h, ff, bias, copies, role),
        Linear(prefix + down, ff, h, bias, copies, role),
    )


def _llama_like(cfg: Config, d: _Dims) -> Architecture:
    """Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 1/2/3, Yi, CodeLlama, TinyLlama, ..."""
    mt = fields.text(cfg, "model_type", "llama")
    qkv_bias = fields.flag(cfg, "attention_bias", default=mt == "qwen2")
    qk_norm = mt in ("qwen3", "gemma3", "olmo2")
    norms = 4 if mt in ("gemma2", "gemma3") else 2
    norm_params = norms * d.h + (2 * d.hd if qk_norm else 0)
    linears = _attention(d, qkv_bias, qkv_bias and mt != "qwen2") + _gated_mlp(
        d.h, d.ff, fields.flag(cfg, "mlp_bias", False)
    )
    block = Block(d.layers, linears, norm_params, norms, d.ff)
    return _arch(cfg, d, (block,), tie_default=mt.startswith("gemma"))


def _phi3(cfg: Config, d: _Dims) -> Architecture:
    """Phi-3: fused ``qkv_proj`` and ``gate_up_proj``."""
    linears = (
        Linear("qkv_proj", d.h, (d.heads + 2 * d.kv) * d.hd),
        Linear("o_proj", d.heads * d.hd, d.h),
        Linear("gate_up_proj", d.h, 2 * d.ff, role="mlp"),
        Linear("down_proj", d.ff, d.h, role="mlp"),
    )
    return _arch(cfg, d, (Block(d.layers, linears, 2 * d.h, 2, d.ff),))


def _phi(cfg: Config, d: _Dims) -> Architecture:
    """Phi-1/1.5/2: parallel attention + GELU MLP under one LayerNorm, biases everywhere."""
    linears = _attention(d, True, True)[:3] + (
        Linear("dense", d.heads * d.hd, d.h, True),
        Linear("fc1", d.h, d.ff, True, role="mlp"),
        Linear("fc2", d.ff, d.h, True, role="mlp"),
    )
    block = Block(d.layers, linears, 2 * d.h, 1, d.ff, gated=False)
    return _arch(cfg, d, (block,), final_norm=2 * d.h, lm_head_bias=True, norm_kind="layer")


def _stablelm(cfg: Config, d: _Dims) -> Architecture:
    linears = _attention(d, fields.flag(cfg, "use_qkv_bias", False)) + _gated_mlp(d.h, d.ff)
    parallel = fields.flag(cfg, "use_parallel_residual", False)
    norms = 1 if parallel else 2
    block = Block(d.layers, linears, norms * 2 * d.h, norms, d.ff)
    return _arch(cfg, d, (block,), final_norm=2 * d.h, norm_kind="layer")


def _falcon(cfg: Config, d: _Dims) -> Architecture:
    """Falcon: fused ``query_key_value``; multi-query or grouped KV; parallel attention."""
    bias = fields.flag(cfg, "bias", False)
    if fields.flag(cfg, "new_decoder_architecture", False):
        kv, norms = d.kv, fields.count(cfg, "num_ln_in_parallel_attn", 2) or 2
    else:
        kv = 1 if fields.flag(cfg, "multi_query", True) else d.heads
        norms = 1 if fields.flag(cfg, "parallel_attn", True) else 2
    ff = fields.size(cfg, "ffn_hidden_size", default=4 * d.h)
    linears = (
        Linear("query_key_value", d.h, (d.heads + 2 * kv) * d.hd, bias),
        Linear("dense", d.heads * d.hd, d.h, bias),
        Linear("dense_h_to_4h", d.h, ff, bias, role="mlp"),
        Linear("dense_4h_to_h", ff, d.h, bias, role="mlp"),
    )
    block = Block(d.layers, linears, norms * 2 * d.h, norms, ff, gated=False)
    arch = _arch(cfg, d, (block,), tie_default=True, final_norm=2 * d.h, norm_kind="layer")
    return replace(arch, num_kv_heads=kv)


def _qwen1(cfg: Config, d: _Dims) -> Architecture:
    """Qwen-1 (``QWenLMHeadModel``): fused ``c_attn``; ``intermediate_size`` is 2x each w1/w2."""
    ff = d.ff // 2
    linears = (
        Linear("c_attn", d.h, 3 * d.heads * d.hd, True),
        Linear("c_proj", d.heads * d.hd, d.h),
        Linear("w1", d.h, ff, role="mlp"),
        Linear("w2", d.h, ff, role="mlp"),
        Linear("c_proj", ff, d.h, role="mlp"),
    )
    return _arch(cfg, d, (Block(d.layers, linears, 2 * d.h, 2, ff),))


def _moe_block(cfg: Config, d: _Dims, count: int, attn: tuple[Linear, ...], norm_params: int,
               shared_ff: int = 0, shared_gate: bool = False) -> Block:
    experts = fields.size(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    top_k = fields.experts_per_token(cfg, experts)
    moe_ff = fields.size(cfg, "moe_intermediate_size", default=d.ff)
    # the router is transformers' own module, not an nn.Linear: never quantized nor adapted
    linears = attn + (Linear("gate", d.h, experts, role="router"),)
    names = EXPERT_NAMES.get(fields.text(cfg, "model_type"), GATED_NAMES)
    linears += _gated_mlp(d.h, moe_ff, role="expert", copies=experts, names=names)
    if shared_ff:
        linears += _gated_mlp(d.h, shared_ff, role="shared", prefix="shared_expert.")
    if shared_gate:  # an nn.Linear scaling the shared expert's output
        linears += (Linear("shared_expert_gate", d.h, 1, role="shared"),)
    return Block(count, linears, norm_params, 2, top_k * moe_ff + shared_ff,
                 experts=experts, experts_per_token=top_k)


def _moe(cfg: Config, d: _Dims) -> Architecture:
    """Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE: attention as Llama, MLP as routed gated experts."""
    mt = fields.text(cfg, "model_type")
    attn = _attention(d, fields.flag(cfg, "attention_bias", mt == "qwen2_moe"))
    # q/k norms: per head (Qwen3-MoE), or over all query and key heads (OLMoE)
    qk_norm = {"qwen3_moe": 2 * d.hd, "olmoe": (d.heads + d.kv) * d.hd}.get(mt, 0)
    norm_params = 2 * d.h + qk_norm
    shared_ff = fields.count(cfg, "shared_expert_intermediate_size")
    # transformers: layer i is sparse unless listed in mlp_only_layers or (i + 1) % step != 0
    step = fields.count(cfg, "decoder_sparse_step", 1, low=1)
    dense_idx = set(fields.layer_indices(cfg, "mlp_only_layers", d.layers))
    dense_idx |= {i for i in range(d.layers) if (i + 1) % step != 0}
    moe = _moe_block(cfg, d, d.layers - len(dense_idx), attn, norm_params, shared_ff, shared_ff > 0)
    dense = Block(len(dense_idx), attn + _gated_mlp(d.h, d.ff), norm_params, 2, d.ff)
    return _arch(cfg, d, _present(moe, dense))


def _deepseek(cfg: Config, d: _Dims) -> Architecture:
    """DeepSeek-V2/V3: multi-head latent attention, leading dense layers, shared experts."""
    nope = fields.size(cfg, "qk_nope_head_dim")
    rope = fields.size(cfg, "qk_rope_head_dim")
    v_dim = fields.size(cfg, "v_head_dim")
    kv_rank = fields.size(cfg, "kv_lora_rank")
    q_rank = fields.count(cfg, "q_lora_rank")
    qk = nope + rope
    attn: tuple[Linear, ...]
    if q_rank:
        attn = (Linear("q_a_proj", d.h, q_rank), Linear("q_b_proj", q_rank, d.heads * qk))
    else:
        attn = (Linear("q_proj", d.h, d.heads * qk),)
    attn += (
        Linear("kv_a_proj_with_mqa", d.h, kv_rank + rope),
        Linear("kv_b_proj", kv_rank, d.heads * (nope + v_dim)),
        Linear("o_proj", d.heads * v_dim, d.h),
    )
    norm_params = 2 * d.h + kv_rank + (q_rank or 0)
    n_dense = fields.count(cfg, "first_k_dense_replace", high=d.layers)
    moe_ff = fields.size(cfg, "moe_intermediate_size")
    shared_ff = fields.count(cfg, "n_shared_experts") * moe_ff
    moe = _moe_block(cfg, d, d.layers - n_dense, attn, norm_params, shared_ff)
    dense = Block(n_dense, attn + _gated_mlp(d.h, d.ff), norm_params, 2, d.ff)
    arch = _arch(cfg, d, _present(dense, moe))
    return replace(arch, head_dim=qk, v_head_dim=v_dim, num_kv_heads=d.heads)


def _generic(cfg: Config, d: _Dims) -> Architecture:
    act = fields.text(cfg, "hidden_act") or fields.text(cfg, "activation_function") or "silu"
    gated = act in ("silu", "swiglu")
    linears = _attention(d)
    linears += _gated_mlp(d.h, d.ff) if gated else (
        Linear("fc1", d.h, d.ff, role="mlp"), Linear("fc2", d.ff, d.h, role="mlp"))
    arch = _arch(cfg, d, (Block(d.layers, linears, 2 * d.h, 2, d.ff, gated=gated),))
    kind = fields.text(cfg, "model_type") or "?"
    note = (f"unknown architecture '{kind}': counted as a generic pre-norm decoder "
            f"({'gated' if gated else 'two-matrix'} MLP, no biases); give a model folder with "
            "*.safetensors for exact counts")
    return _with_assumption(arch, note)


def _arch(cfg: Config, d: _Dims, blocks: tuple[Block, ...], tie_default: bool = False,
          final_norm: int | None = None, lm_head_bias: bool = False, norm_kind: str = "rms") -> Architecture:
    max_pos = _get(cfg, "max_position_embeddings", "seq_length", "n_positions")
    if max_pos is not None:
        max_pos = fields.size(cfg, "max_position_embeddings", "seq_length", "n_positions")
    # transformers' Gemma2Config defaults the soft-cap to 30.0 when config.json leaves it out
    gemma2 = fields.text(cfg, "model_type") == "gemma2"
    softcap = fields.number(cfg, "final_logit_softcapping", 30.0 if gemma2 else None)
    return Architecture(
        model_type=fields.text(cfg, "model_type") or "unknown",
        hidden_size=d.h,
        vocab_size=d.vocab,
        num_heads=d.heads,
        num_kv_heads=d.kv,
        head_dim=d.hd,
        v_head_dim=d.hd,
        blocks=blocks,
        tie_word_embeddings=fields.flag(cfg, "tie_word_embeddings", tie_default),
        final_norm_params=d.h if final_norm is None else final_norm,
        lm_head_bias=lm_head_bias,
        norm_kind=norm_kind,
        max_position_embeddings=max_pos,
        logit_softcap=bool(softcap),
    )


def _present(*blocks: Block) -> tuple[Block, ...]:
    """The blocks that occur at all: every layer dense (``mlp_only_layers`` listing them all) or
    every layer sparse leaves the other kind with no layer, not a layer kind of count 0."""
    return tuple(b for b in blocks if b.count)


def _with_assumption(arch: Architecture, note: str) -> Architecture:
    return replace(arch, assumptions=arch.assumptions + (note,))


_FAMILIES: dict[str, Callable[[Config, _Dims], Architecture]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3",
                     "yi", "olmo2", "granite", "cohere", "internlm2"), _llama_like),
    **dict.fromkeys(("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"), _moe),
    **dict.fromkeys(("deepseek_v2", "deepseek_v3"), _deepseek),
    "phi3": _phi3,
    "phi": _phi,
    "stablelm": _stablelm,
    **dict.fromkeys(("falcon", "RefinedWeb", "RefinedWebModel"), _falcon),
    "qwen": _qwen1,
}


def architecture_from_config(cfg: Config, source: str = "config.json") -> Architecture:
    """Build the architecture of a Hugging Face causal LM config (a parsed config.json).

    Raises PlannerError, one line naming ``source`` (the file, or the catalog entry) and the field.
    """
    if not isinstance(cfg, dict):
        raise PlannerError(f"{source} must be a JSON object with the model's fields")
    try:
        if isinstance(cfg.get("text_config"), dict):  # multimodal wrappers: plan the language model
            cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type"))}
        family = _FAMILIES.get(fields.text(cfg, "model_type"))
        return (family or _generic)(cfg, _Dims(cfg))
    except PlannerError as exc:
        raise PlannerError(f"{source}: {exc}") from None
