"""What the parameters, their gradients and the optimizer state take: bytes per GPU before
sharding, by method, quantization and optimizer (planner/memory.py adds the step's transients).

References: Rajbhandari et al. 2020, "ZeRO" (2 + 2 + 12 bytes per parameter under mixed-precision
Adam); Dettmers et al. 2023, "QLoRA" (NF4 with 64-weight blocks, double quantization of the block
scales with 256-scale blocks); Dettmers et al. 2022, "8-bit Optimizers via Block-wise
Quantization"; Hu et al. 2021, "LoRA".
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.activations import HEAD_NAMES
from planner.adapted import adapted, is_feedforward
from planner.catalog import Architecture
from planner.errors import PlannerError
from planner.options import TrainSetup
from planner.units import FP32

# Bits per weight of each quantized format, and the block-scale overhead in bytes per weight.
QUANT_BITS = {"nf4": 4, "fp4": 4, "int8": 8, "2bit": 2}
_NF4_BLOCK = 64
_DOUBLE_QUANT_BLOCK = 256
_HQQ_GROUP = 64
_BNB_OPT_BLOCK = 256


@dataclass(frozen=True)
class Params:
    """Parameter bytes before sharding."""

    weights: int
    quant_state: int
    adapters: int
    trainable: int
    trainable_bytes: int
    """Bytes of the trainable parameters themselves (their dtype sets gradient and Adam sizes)."""
    matrix_dims: int
    """Sum of rows + columns over trainable matrices (Adafactor's factored second moment)."""
    largest: int
    """Elements of the largest trainable tensor (Adafactor updates one tensor at a time)."""
    layer_bytes: int
    """The part of ``trainable_bytes`` inside the decoder layers (their gradients come layer by layer)."""


def _modules_to_save(arch: Architecture, names: tuple[str, ...]) -> int:
    """Parameters of the modules trained in full next to the adapters (peft ``modules_to_save``)."""
    total = 0
    for name in names:
        if name in ("embed_tokens", "wte", "word_embeddings", "embed_in"):
            total += arch.embed_params
        elif name in HEAD_NAMES:
            total += arch.lm_head_params or arch.embed_params  # tied: peft unties a trainable copy
        else:
            raise PlannerError(f"--modules-to-save '{name}' is not supported; use embed_tokens and/or lm_head",
                               "modules_to_save")
    return total


def _adapter_params(arch: Architecture, setup: TrainSetup) -> tuple[int, int, int]:
    """The adapter's parameters, their matrices' rows + columns, and the largest tensor's
    elements. LoRA: r x d_in and d_out x r per adapted layer; DoRA adds a magnitude per output row
    (``lora_magnitude_vector``), AdaLoRA a singular value per rank (``lora_E``, r x 1) at its
    starting rank. IA3: one scale per output (per input for a feedforward layer). Prompt tuning:
    a virtual token embedding; prefix tuning: a key and a value per layer per virtual token
    (peft's ``PrefixEncoder``, GQA-sized)."""
    if setup.peft == "prompt":
        n = setup.virtual_tokens * arch.hidden_size
        return n, setup.virtual_tokens + arch.hidden_size, n
    if setup.peft == "prefix":
        width = arch.num_layers * 2 * arch.num_kv_heads * arch.head_dim
        return setup.virtual_tokens * width, setup.virtual_tokens + width, setup.virtual_tokens * width
    params = dims = largest = 0
    r = setup.adapter_rank
    for block in arch.blocks:
        for lin in block.linears:
            if not adapted(lin, setup):
                continue
            tensors = block.count * lin.copies
            if setup.peft == "ia3":
                d = lin.d_in if is_feedforward(lin) else lin.d_out
                params, dims, largest = params + tensors * d, dims + tensors * (d + 1), max(largest, d)
                continue
            # DoRA's magnitude per output row, AdaLoRA's singular values
            extra = lin.d_out if setup.use_dora else r if setup.peft == "adalora" else 0
            params += tensors * (r * (lin.d_in + lin.d_out) + extra)
            dims += tensors * (2 * r + lin.d_in + lin.d_out + extra + (1 if setup.peft == "adalora" else 0))
            largest = max(largest, r * max(lin.d_in, lin.d_out))
    if not largest:
        names = ", ".join(sorted(arch.linear_names()))
        raise PlannerError(f"--lora-targets {','.join(setup.lora_targets)} matches no module; this model has: {names}",
                           "lora_targets")
    return params, dims, largest


def params(arch: Architecture, setup: TrainSetup, total: int) -> Params:
    wb = setup.weight_bytes
    embed = arch.vocab_size * arch.hidden_size
    if setup.method == "full":
        dims = sum(b.count * lin.copies * (lin.d_in + lin.d_out) for b in arch.blocks for lin in b.linears)
        largest = max([embed] + [lin.d_in * lin.d_out for b in arch.blocks for lin in b.linears])
        wb = FP32 if setup.fp32_masters else wb
        return Params(total * wb, 0, 0, total, total * wb, dims, largest, arch.layer_params * wb)

    lora, dims, lora_largest = _adapter_params(arch, setup)
    adapter_b = FP32 if setup.adapter_dtype == "fp32" or setup.fp32_masters else 2
    if setup.method == "lora":
        weights, quant_state, other_b = total * wb, 0, wb
    else:
        # prepare_model_for_kbit_training casts every weight bitsandbytes left alone to fp32.
        other_b = FP32 if setup.fp32_unquantized else wb
        weights, quant_state = quantized_base(arch, setup.quant or "nf4", setup.double_quant, total, other_b)
    mts = _modules_to_save(arch, setup.modules_to_save)
    mts_b = FP32 if setup.fp32_masters else other_b
    adapters = lora * adapter_b + mts * mts_b
    largest = embed if mts else lora_largest
    # prompt and prefix tuning train no layer: their one tensor's gradient comes at backward's end
    layer_bytes = lora * adapter_b if setup.adapts_linears else 0
    return Params(weights, quant_state, adapters, lora + mts, adapters, dims, largest, layer_bytes)


def quantized_base(arch: Architecture, quant: str, double_quant: bool, total: int, other_bytes: int) -> tuple[int, int]:
    """(weights, quant_state) bytes of a ``total``-parameter base whose decoder Linears are stored
    in ``quant`` and whose other weights take ``other_bytes`` each (QLoRA training, 4-bit inference)."""
    quantized = arch.linear_weight_params
    weights = quantized * QUANT_BITS[quant] // 8 + (total - quantized) * other_bytes
    return weights, _quant_state_bytes(arch, quant, double_quant, quantized)


def _quant_state_bytes(arch: Architecture, quant: str, double_quant: bool, quantized: int) -> int:
    if quant in ("nf4", "fp4"):
        blocks = quantized // _NF4_BLOCK
        if double_quant:
            # uint8 absmax per block, re-quantized with one fp32 scale per 256 of them
            return blocks + FP32 * (blocks // _DOUBLE_QUANT_BLOCK)
        return FP32 * blocks
    if quant == "int8":
        # LLM.int8: one fp32 scale (SCB) per output row
        return FP32 * sum(b.count * lin.copies * lin.d_out for b in arch.blocks for lin in b.linears)
    # 2-bit HQQ-style: fp16 scale and zero point per group of 64
    return 2 * 2 * (quantized // _HQQ_GROUP)


PAGED_MIN_ELEMENTS = 100_000
"""bitsandbytes pages the state of a tensor this large or larger: ``get_state_buffer`` keeps
smaller ones as torch tensors (bitsandbytes/optim/optimizer.py, ``p.numel() < 1e5``)."""


def paged_state_bytes(arch: Architecture, setup: TrainSetup) -> int:
    """Optimizer state a paged bitsandbytes optimizer keeps in CUDA managed memory
    (``F.get_paged``: ``cudaMallocManaged``), outside PyTorch's caching allocator: device memory
    that ``max_memory_allocated`` and ``max_memory_reserved`` never count and the driver can move
    to host RAM under pressure. 0 for every other optimizer."""
    if not setup.optimizer.startswith("paged_"):
        return 0
    per_element = 2 if setup.optimizer == "paged_adamw_8bit" else 2 * FP32  # two moments

    def big(elements: int) -> int:
        return elements if elements >= PAGED_MIN_ELEMENTS else 0

    embed = arch.vocab_size * arch.hidden_size
    elements = 0
    for block in arch.blocks:
        for lin in block.linears:
            tensors = block.count * lin.copies
            if setup.method == "full":
                elements += tensors * big(lin.d_in * lin.d_out)
            elif setup.low_rank and adapted(lin, setup):
                r = setup.adapter_rank
                elements += tensors * (big(r * lin.d_in) + big(lin.d_out * r))
    if setup.peft in ("prompt", "prefix"):
        elements += big(_adapter_params(arch, setup)[0])
    saved = setup.modules_to_save if setup.is_peft else ("embed_tokens", "lm_head")
    if any(name not in HEAD_NAMES for name in saved):  # the input embedding
        elements += big(embed)
    if any(name in HEAD_NAMES for name in saved) and (arch.lm_head_params or setup.is_peft):
        elements += big(embed)  # an untied head, or peft's trainable copy of a tied one
    return per_element * elements


def optimizer_state(setup: TrainSetup, p: Params, cuda: bool) -> tuple[int, int]:
    """(persistent state bytes, step temporaries) for the trainable parameters."""
    opt = setup.optimizer
    if opt in ("adamw_torch", "adamw_torch_fused"):
        # exp_avg and exp_avg_sq in the parameter dtype. Temporaries: on a GPU foreach AdamW's
        # sqrt(exp_avg_sq) for every tensor at once; on the CPU, tensor by tensor, the largest
        # tensor's sqrt and its quotient by the bias correction, alive together.
        temp = p.trainable_bytes if cuda else 2 * p.largest * p.trainable_bytes // p.trainable
        return 2 * p.trainable_bytes, temp if opt == "adamw_torch" else 0
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        return p.trainable * 2 + 2 * FP32 * (p.trainable // _BNB_OPT_BLOCK), 0
    if opt == "paged_adamw_32bit":
        return p.trainable * 2 * FP32, 0
    if opt == "sgd":
        return 0, 0  # HF's sgd has no momentum by default
    # transformers' Adafactor: factored second moment; its step works one tensor at a time in
    # fp32 (16-bit parameters and gradients upcast, the squared gradient, the update).
    copies = 2 if setup.weight_bytes == FP32 else 4
    return FP32 * p.matrix_dims, copies * FP32 * p.largest


def importance_state(setup: TrainSetup, p: Params) -> int:
    """AdaLoRA's rank allocator keeps, per adapter tensor, its importance |w * grad| and that
    importance's two moving averages, from the first step it scores on (peft adalora/layer.py
    ``RankAllocator.update_ipt``): three copies of the adapters beside the optimizer's state."""
    return 3 * p.layer_bytes if setup.peft == "adalora" else 0
