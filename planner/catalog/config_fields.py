"""Reading a Hugging Face ``config.json``'s fields with the types and ranges a real model has.

The one place model configs are validated (as the trainer's ``TrainConfig`` validates run
configs): every size is a positive whole number of sane size, every flag a real JSON boolean,
every MoE layout field inside the model. Why this strict: the estimator multiplies these
numbers, so a string read as ``true``, a layer index past the last layer or a 400-digit width
would give negative parameter counts, absurd byte counts or float overflow instead of an
error. Messages name the field; :func:`planner.catalog.hf_config.architecture_from_config`
adds the config file.
"""

from __future__ import annotations

from typing import Any

from planner.errors import PlannerError, shown

Config = dict[str, Any]

MAX_WIDTH = 2**20
"""Hidden, intermediate, head and latent widths: 64x the widest published model's."""
MAX_LAYERS = 2**14
MAX_VOCAB = 2**24
MAX_COUNT = 2**16
"""Heads, experts, experts per token, shared experts."""
MAX_POSITIONS = 2**30

LIMITS: dict[str, int] = {
    "num_hidden_layers": MAX_LAYERS, "vocab_size": MAX_VOCAB, "max_position_embeddings": MAX_POSITIONS,
    "num_attention_heads": MAX_COUNT, "num_key_value_heads": MAX_COUNT, "num_local_experts": MAX_COUNT,
    "num_experts_per_tok": MAX_COUNT, "n_shared_experts": MAX_COUNT, "first_k_dense_replace": MAX_LAYERS,
    "decoder_sparse_step": MAX_LAYERS, "num_ln_in_parallel_attn": 2,
}
"""Upper bound per field (by the first of its aliases); any other size: MAX_WIDTH."""


def _find(cfg: Config, keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first alias present with a non-null value, and that value (``keys[0]``, None if none)."""
    for key in keys:
        if cfg.get(key) is not None:
            return key, cfg[key]
    return keys[0], None


def _whole(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlannerError(f"'{key}' must be a whole number from {low} to {high}, got {shown(value)}")
    return value


def size(cfg: Config, *keys: str, default: int | None = None) -> int:
    """A required positive size (the first alias present), or ``default`` when none is."""
    key, value = _find(cfg, keys)
    if value is None:
        if default is None:
            raise PlannerError(f"'{keys[0]}' is missing; check that this is a causal language model config")
        return default
    return _whole(key, value, 1, LIMITS.get(keys[0], MAX_WIDTH))


def count(cfg: Config, key: str, default: int = 0, low: int = 0, high: int | None = None) -> int:
    """An optional whole number >= ``low`` (null or absent: ``default``)."""
    value = cfg.get(key)
    if value is None:
        return default
    return _whole(key, value, low, LIMITS.get(key, MAX_WIDTH) if high is None else high)


def flag(cfg: Config, key: str, default: bool) -> bool:
    """A JSON boolean (null or absent: ``default``); ``"false"`` is a string, which Python's
    ``bool()`` would read as true."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise PlannerError(f"'{key}' must be true or false (a JSON boolean), got {shown(value)}")
    return value


def text(cfg: Config, key: str, default: str = "") -> str:
    """An optional string such as ``model_type`` or ``hidden_act`` (null or absent: ``default``)."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise PlannerError(f"'{key}' must be a string, got {shown(value)}")
    return value


def number(cfg: Config, key: str, default: float | None = None) -> float | None:
    """An optional finite number >= 0, e.g. a logit soft-cap."""
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        raise PlannerError(f"'{key}' must be a number >= 0 and < 1e6, or null, got {shown(value)}")
    return float(value)


def layer_indices(cfg: Config, key: str, layers: int) -> frozenset[int]:
    """A list of layer indices, each in 0..layers-1 (absent or null: none)."""
    value = cfg.get(key)
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise PlannerError(f"'{key}' must be a list of layer indices, got {shown(value)}")
    for index in value:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < layers:
            raise PlannerError(f"'{key}' lists {shown(index)}, not a layer index from 0 to {layers - 1} "
                               f"(num_hidden_layers is {layers})")
    return frozenset(value)


def experts_per_token(cfg: Config, experts: int) -> int:
    """``num_experts_per_tok``: routing picks at most every expert there is."""
    key, value = _find(cfg, ("num_experts_per_tok", "top_k"))
    top_k = size(cfg, "num_experts_per_tok", "top_k")
    if top_k > experts:
        raise PlannerError(f"'{key}' is {value} but the model has only {experts} experts per layer")
    return top_k


def head_dim(cfg: Config, hidden: int, heads: int) -> int:
    """``head_dim``, by default ``hidden_size // num_attention_heads``, which must be >= 1."""
    if _find(cfg, ("head_dim", "kv_channels"))[1] is None and heads > hidden:
        raise PlannerError(f"'num_attention_heads' ({heads}) exceeds 'hidden_size' ({hidden}) and no "
                           "'head_dim' is given; check the config")
    return size(cfg, "head_dim", "kv_channels", default=hidden // heads)
