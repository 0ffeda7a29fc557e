"""Memory of generating text (the try page's chat): one transformers ``model.generate`` call, in bytes.

peak_allocated = weights + quant_state + adapters + max(prefill, decode) + workspace
    prefill = cache(prompt) + the prompt's largest moment in the last layer's forward
              (its MLP intermediates, or its query's rotary embedding) + one dequantized weight
    decode  = cache(prompt + new) + max(grow, logits), at the last new token
              grow:   torch.cat makes a layer's longer key (or value) while the old one exists
              logits: the last token's logits, their fp32 copy and the previous step's copy
    cache(t) = (K + V) x layers x kv_heads x head_dim x t x batch x compute bytes
reported as kv_cache = cache(prompt + new) and transient = the rest of max(prefill, decode)
peak_reserved  = peak_allocated + allocator_slack; device_used = peak_reserved + cuda_context

References: Pope et al. 2022, "Efficiently Scaling Transformer Inference" (the KV cache's size);
transformers 5.24 generation/utils.py (``logits_to_keep=1``: prefill computes one position's
logits; ``outputs.logits[:, -1].to(copy=True, dtype=torch.float32)``), cache_utils.py
(``DynamicLayer.update``: ``torch.cat``), models/llama/modeling_llama.py (what a layer keeps
alive); peft 0.21 ``lora.Linear.forward`` (``result + lora_B(lora_A(x)) * scaling``).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.calibration import ALLOCATOR_SLACK, CUBLAS_WORKSPACE, CUDA_CONTEXT
from planner.catalog import Architecture, ModelSpec
from planner.errors import PlannerError
from planner.memory import DEVICES
from planner.params import QUANT_BITS, quantized_base

IDS = 2 * 8
"""Bytes per token per sequence of the int64 ``input_ids`` and ``attention_mask`` generate keeps."""
DEQUANT_MIN_ROWS = 512
"""bitsandbytes' CUDA 4-bit matmul dequantizes the whole weight above this many rows
(planner/simulate/meta.py)."""


@dataclass(frozen=True)
class InferenceEstimate:
    """Bytes on the device at the peak of one ``generate`` call, by what holds them."""

    weights: int
    """The base as loaded for inference: ``dtype_bytes`` per weight, or a quantized base's packed
    Linears beside its other weights in ``dtype_bytes``."""
    quant_state: int
    """bitsandbytes' block scales (absmax) and code tables (planner/params.py)."""
    adapters: int
    """LoRA A and B of every loaded adapter, in the adapter dtype."""
    kv_cache: int
    """transformers' DynamicCache at its full length, prompt + new tokens."""
    transient: int
    """The largest step's temporaries beyond the full cache (prefill: less the new tokens' cache,
    which does not exist yet); token ids included."""
    workspace: int
    """cuBLAS workspace (CUDA only)."""
    cuda_context: int
    allocator_slack: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    peak_phase: str
    """``prefill`` (the prompt's forward) or ``decode`` (the last new token)."""
    assumptions: tuple[str, ...]


def kv_cache_bytes(arch: Architecture, tokens: int, batch: int, dtype_bytes: int) -> int:
    """DynamicCache bytes for ``tokens`` positions: a key (head_dim) and a value (v_head_dim) per
    KV head, layer, token and sequence, in the compute dtype."""
    per_token = arch.num_layers * arch.num_kv_heads * (arch.head_dim + arch.v_head_dim) * dtype_bytes
    return per_token * tokens * batch


def _layer_moment(arch: Architecture, b: int, a: int, lora: bool) -> int:
    """Bytes per prompt token at the prefill's largest moment in one layer, beyond the cache.

    Alive throughout: the embeddings the model keeps, the layer's input, the normed input (and,
    in the MLP, the residual after attention); RoPE's cos and sin. A Linear with a LoRA branch
    holds its output, the branch's output and its scaled copy, then the sum (fp32 with fp32
    adapters on a 16-bit base), beside its input cast to the adapter dtype."""
    block = max(arch.blocks, key=lambda blk: blk.ffn_width)
    hidden, q, ffn, gated = arch.hidden_size, arch.num_heads * arch.head_dim, block.ffn_width, block.gated
    rope = 2 * arch.head_dim * b
    out = b + a + max(a, b) if lora else b  # per output element of a Linear while its branch adds in
    cast = hidden * a if lora and a != b else 0
    # q, q * cos, rotate_half(q) and its product with sin; or q_proj's output with its LoRA branch
    attention = 3 * hidden * b + rope + max(4 * q * b, cast + q * out)
    # gated: act(gate), up and their product; or up_proj's output and branch beside act(gate)
    mlp = 4 * hidden * b + rope + (max(3 * ffn * b, cast + ffn * (b + out)) if gated else
                                   max(2 * ffn * b, cast + ffn * out))
    return max(attention, mlp)


def inference_memory(model: ModelSpec, *, quant: str | None, dtype_bytes: int, prompt_tokens: int,
                     new_tokens: int, adapter_params: int = 0, adapter_bytes: int = 4, batch: int = 1,
                     double_quant: bool = True, device: str = "cuda", virtual_tokens: int = 0) -> InferenceEstimate:
    """Predict the peak memory of generating ``new_tokens`` after a ``prompt_tokens`` prompt for
    ``batch`` sequences, greedy, with transformers' default DynamicCache.

    ``dtype_bytes``: the load and compute dtype (2 for bf16/fp16, 4 for fp32); ``quant``: the
    base's bitsandbytes format (``nf4``, ``fp4``, ``int8``) or None; ``adapter_params``: LoRA
    parameters over every loaded adapter, ``adapter_bytes`` each (peft keeps them in fp32);
    ``virtual_tokens``: a prompt- or prefix-tuning adapter's, which join the prompt's positions
    (trainer/virtual_tokens.py) instead of adding a LoRA branch to every layer."""
    if device not in DEVICES:
        raise PlannerError(f"device '{device}' is not one of: {', '.join(DEVICES)}", "device")
    if quant is not None and quant not in QUANT_BITS:
        raise PlannerError(f"--quant {quant} is not one of: {', '.join(QUANT_BITS)}", "quant")
    for name, value, allowed in (("dtype_bytes", dtype_bytes, (2, 4)), ("adapter_bytes", adapter_bytes, (2, 4))):
        if value not in allowed:
            raise PlannerError(f"{name} must be 2 (bf16/fp16) or 4 (fp32), got {value}", name)
    for name, value in (("prompt_tokens", prompt_tokens), ("new_tokens", new_tokens), ("batch", batch)):
        if value < 1:
            raise PlannerError(f"{name} must be at least 1, got {value}", name)
    if adapter_params < 0:
        raise PlannerError(f"adapter_params must be 0 or more, got {adapter_params}", "adapter_params")
    cuda, arch, b = device == "cuda", model.arch, dtype_bytes
    total, lora = model.total_params, adapter_params > 0 and not virtual_tokens
    prompt_tokens += virtual_tokens
    if quant is None:
        weights, quant_state = total * b, 0
    else:
        weights, quant_state = quantized_base(arch, quant, double_quant, total, b)
    adapters = adapter_params * adapter_bytes
    length = prompt_tokens + new_tokens

    kv_cache = kv_cache_bytes(arch, length, batch, b)
    prompt_cache = kv_cache_bytes(arch, prompt_tokens, batch, b)
    big = arch.largest_linear()
    rows = batch * prompt_tokens
    dequant = big.d_in * big.d_out * b if cuda and quant in ("nf4", "fp4") and rows > DEQUANT_MIN_ROWS else 0
    prefill = prompt_cache + rows * (_layer_moment(arch, b, adapter_bytes, lora) + IDS) + dequant
    # one layer's key (head_dim) or value at full length, made while the shorter one exists
    grow = batch * arch.num_kv_heads * max(arch.head_dim, arch.v_head_dim) * length * b
    fp32_logits = batch * arch.vocab_size * 4
    logits = batch * arch.vocab_size * b + 2 * fp32_logits  # the model's, its copy, the previous step's
    decode = kv_cache + max(grow + fp32_logits, logits) + batch * length * IDS
    phase = "prefill" if prefill > decode else "decode"
    transient = max(prefill, decode) - kv_cache
    workspace = CUBLAS_WORKSPACE if cuda else 0
    context = CUDA_CONTEXT if cuda else 0
    peak = weights + quant_state + adapters + kv_cache + transient + workspace
    slack = int(ALLOCATOR_SLACK * (transient + workspace)) if cuda else 0
    return InferenceEstimate(weights, quant_state, adapters, kv_cache, transient, workspace, context, slack,
                             peak, peak + slack, peak + slack + context, phase,
                             tuple(list(model.assumptions) + _assumptions(arch, quant, lora, cuda)))


def _assumptions(arch: Architecture, quant: str | None, lora: bool, cuda: bool) -> list[str]:
    out = ["generate with transformers' DynamicCache (every layer caches every token; no sliding window, no "
           "quantized or static cache), greedy; sampling adds a few vocabulary-sized fp32 copies per step",
           "sdpa attention with a fused kernel and no padding: no prompt x prompt score matrix",
           "the prefill's peak is in the last layer (Llama's code path: the model keeps the embeddings alive); "
           "a new token's own activations (a few KiB) are not counted",
           "the cache counts prompt + new tokens: generate never feeds back the last token it picks, so the "
           "cache it returns is one token shorter"]
    if lora:
        out.append("adapters unmerged (peft), every Linear adapted (all-linear); one adapter active at a time")
    if quant in ("nf4", "fp4") and cuda:
        out.append(f"bitsandbytes dequantizes one whole weight for prompts over {DEQUANT_MIN_ROWS} rows "
                   "(batch x tokens); one token at a time runs its gemv kernel")
    if quant == "int8":
        out.append("LLM.int8's activation quantization and outlier buffers are not counted")
    if arch.is_moe:
        out.append("MoE: the routed experts' intermediates counted as one MLP of their summed width")
    if cuda:
        out.append(f"reserved = allocated + {ALLOCATOR_SLACK:.0%} of the transient (the training fit, "
                   "not measured for generation)")
    return out
