"""Activation memory of one training step: what autograd saves, per decoder layer and for the loss.

Every term counts the tensors the real forward of a transformers decoder layer keeps for
backward (module by module), in bytes for the whole micro-batch.

References:
    Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
    (per-layer saved activations, sbh(34 + 5as/h) for GPT-3 with fp16 and dropout);
    transformers ``LlamaRMSNorm`` (fp32 upcast), ``ForCausalLMLoss`` (fp32 logits copy);
    peft ``lora.Linear.forward`` (input cast to the adapter dtype);
    torch.utils.checkpoint (non-reentrant: each layer keeps its input, recomputes the rest, and
    stops the recompute at the last tensor it saves); torch.autograd.graph.save_on_cpu (the
    saved-tensor hooks that offload those inputs); transformers ``enable_input_require_grads``
    (the embedding output a leaf under LoRA). The backward peak was read tensor by tensor off
    precise mode (planner/simulate) at 32k-65k tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.adapted import adapted, is_down, is_feedforward
from planner.catalog.arch import Architecture, Block, Linear
from planner.fused_kernels import fused, unsloth_layer
from planner.loss import OUTPUT_CHUNKS, loss_chunk_tokens
from planner.options import TrainSetup
from planner.units import FP32

# Linears that write back to the residual stream (they read an intermediate, not the normed input).
_OUTPUT_PROJECTIONS = {"o_proj", "down_proj", "dense", "c_proj", "dense_4h_to_h", "fc2", "kv_b_proj", "q_b_proj"}


def residual_bytes(setup: TrainSetup) -> int:
    """Bytes per element of the residual stream.

    Embeddings computing in fp32 (mixed precision, fp32, or QLoRA after
    ``prepare_model_for_kbit_training``, unsharded) make every residual add promote to fp32.
    """
    return FP32 if setup.fp32_weights_compute else setup.compute_bytes


HEAD_NAMES = ("lm_head", "embed_out", "output")
"""What the LM head is called in ``modules_to_save``."""


def trainable_head_bytes(setup: TrainSetup) -> int:
    """Bytes per element of the LM head's weight when it trains (full fine-tuning, or the head in
    ``modules_to_save``: peft's trainable copy in the dtype the other weights have), else 0."""
    if setup.fp32_masters and (setup.method == "full" or any(name in HEAD_NAMES for name in setup.modules_to_save)):
        return FP32
    if setup.method == "full":
        return setup.weight_bytes
    if any(name in HEAD_NAMES for name in setup.modules_to_save):
        return FP32 if setup.fp32_unquantized else setup.weight_bytes
    return 0


@dataclass(frozen=True)
class LayerActivations:
    """One decoder layer's activation bytes for the whole micro-batch."""

    saved: int
    """Everything the layer keeps for backward without checkpointing."""
    checkpoint: int
    """What the layer keeps under gradient checkpointing: its input."""
    backward_transient: int
    """What the layer's backward holds beside its saved tensors at its peak: gradients in flight and
    the recompute's own temporaries, less the saved tensors backward has already freed by then."""


def _mlp_passes(block: Block) -> list[tuple[int, Linear | None, float]]:
    """(intermediate width per token, down projection, share of the tokens) of each MLP that runs
    as one pass: the dense MLP, or one routed expert at a time (tokens x top_k / experts each) and
    the shared expert."""
    downs = [lin for lin in block.linears if is_down(lin)]
    if not block.experts:
        return [(block.ffn_width, downs[0] if downs else None, 1.0)]
    routed = next((lin for lin in downs if lin.role == "expert"), None)
    shared = [lin for lin in downs if lin.role == "shared"]
    width = routed.d_in if routed else (block.ffn_width - sum(lin.d_in for lin in shared)) // block.experts_per_token
    return [(width, routed, block.experts_per_token / block.experts)] + [(lin.d_in, lin, 1.0) for lin in shared]


def layer_activations(arch: Architecture, block: Block, setup: TrainSetup) -> LayerActivations:
    tokens, s, kv = setup.model_tokens, setup.model_seq_len, setup.kv_len
    c, rb, h = setup.compute_bytes, residual_bytes(setup), arch.hidden_size
    if fused(block, setup):
        layer = unsloth_layer(arch, block, setup, rb)
        return LayerActivations(tokens * layer.saved, tokens * rb * h, tokens * layer.backward)
    full = setup.method == "full"
    q_w = arch.num_heads * arch.head_dim
    kv_w = arch.num_kv_heads * arch.head_dim
    o_w = arch.num_heads * arch.v_head_dim
    k = max(block.experts_per_token, 1)

    # A matmul saves its input for backward only when it needs it (trainable weight, or LoRA); a
    # 4-bit one too from bitsandbytes 0.43.2 on (PR #1270; 0.41-0.43.1 kept every input, which
    # litgpt's 2023 QLoRA rows measured: docs/stacks.md).
    # Whether that input is the layer's own tensor or a fresh copy decides what stays alive:
    # peft casts a LoRA input to an fp32 adapter's dtype, and autocast casts an fp32 residual (or
    # norm output) to 16 bits for every matmul that reads it (one copy per consumer).
    adapter_cast = setup.adapts_linears and setup.adapters_compute_fp32 and c != FP32
    residual_cast = rb != c
    readers = [lin for lin in block.linears
               if lin.role not in ("expert",) and lin.name.split(".")[-1] not in _OUTPUT_PROJECTIONS]
    # Norms: their fp32 input (RMSNorm upcasts it; autocast runs LayerNorm in fp32), plus the
    # normalised output when something keeps that very tensor (a frozen norm weight's mul needs
    # only the weight): under LoRA an adapter reading it uncast, which the attention's and the
    # MLP's norm each have only when one of the projections reading it is targeted. RMSNorm
    # returns the residual's dtype, LayerNorm fp32: then every reader casts its own 16-bit copy.
    norm_input = FP32
    norm_out = rb if arch.norm_kind == "rms" else FP32
    norm_cast = norm_out != c
    uncast = setup.low_rank and not adapter_cast and not norm_cast
    kept_by = {lin.role == "attn" for lin in readers if uncast and adapted(lin, setup)}
    outputs_kept = block.norms if full else min(len(kept_by), block.norms)
    norms = (block.norms * norm_input + outputs_kept * norm_out) * h
    if full and not residual_cast:
        # a trainable norm weight's mul keeps the normalised input; the matmuls after it keep
        # its output, a second 16-bit tensor
        norms += block.norms * c * h
    # Full fine-tuning: each 16-bit matmul reading an fp32 residual keeps its own cast copy.
    input_casts = len(readers) * c * h if full and residual_cast else 0
    # Attention: q, k, v and the output saved by SDPA/flash, plus the fp32 log-sum-exp per head.
    # Prefix tuning's keys and values join each layer's (the cache's concatenation, kept instead):
    # (kv - s) more rows of K and V per sample.
    if setup.attention == "eager":
        # repeat_kv expands K/V to every head; scores keep the fp32 softmax and its copy in the
        # compute dtype (none when that is fp32: ``.to(query.dtype)`` returns the tensor itself).
        attention = c * (3 * q_w + o_w) + arch.num_heads * kv * (FP32 + (c if c != FP32 else 0))
        prefix_keys = setup.batch_size * (kv - s) * 2 * q_w * c
    else:
        attention = c * (q_w + 2 * kv_w + o_w) + FP32 * arch.num_heads
        prefix_keys = setup.batch_size * (kv - s) * 2 * kv_w * c
    if full and setup.attention == "eager":
        # eager attention hands o_proj a contiguous copy of its (b, h, s, d) output, which o_proj
        # keeps; fused kernels already write (b, s, h, d)
        attention += c * o_w
    # MLP: gate, up and activation outputs; the down projection's input when anything needs it.
    down_lora = setup.low_rank and any(adapted(lin, setup) for lin in block.linears if is_down(lin))
    # IA3 on down scales its input (kept for the scale's gradient), or a cast of it to its dtype
    down_ia3 = setup.peft == "ia3" and any(adapted(lin, setup) for lin in block.linears if is_down(lin))
    down_needs_input = full or ((down_lora or down_ia3) and not adapter_cast)
    # bitsandbytes' Linear4bit returns its input's dtype: after prepare_model_for_kbit_training
    # the fp32 residual makes gate/up outputs, and everything the MLP computes from them, fp32.
    mlp_bytes = rb if setup.method == "qlora" else c
    if block.gated:
        mlp = mlp_bytes * block.ffn_width * (3 + int(down_needs_input))
    else:
        mlp = mlp_bytes * block.ffn_width * (1 + int(down_needs_input))
    # MoE: router softmax (fp32) and the gathered/weighted copies of each routed token.
    moe = (2 * FP32 * block.experts + 2 * k * c * h) if block.experts else 0
    # LoRA: the adapter input cast to the adapter dtype (when it differs) and A's output.
    def adapter(lin: Linear) -> int:
        if not adapted(lin, setup):
            return 0
        passes = k if lin.role == "expert" else 1
        if setup.peft == "ia3":
            # peft ia3.Linear: a feedforward layer's input cast to the scale's dtype (when it
            # differs), any other's base output, kept by the product with the scale
            if is_feedforward(lin):
                return passes * FP32 * lin.d_in if adapter_cast else 0
            return passes * mlp_bytes * lin.d_out
        copied = adapter_cast or (norm_cast and lin in readers)
        kept = passes * (c * setup.adapter_rank + (c * lin.d_in if copied else 0))
        if setup.lora_dropout > 0:
            # dropout acts on the adapter's input: fp32 when it was cast to fp32 adapters, else
            # the compute dtype (bf16 adapters under bf16); plus its one-byte mask
            kept += passes * ((FP32 if adapter_cast else c) + 1) * lin.d_in
        if setup.use_dora:
            # DoRA scales the base output and the adapter's by magnitude / norm: both products
            # keep their 16-bit operand for the magnitude's gradient (peft lora/dora.py forward)
            kept += passes * 2 * c * lin.d_out
        return kept

    lora = sum(adapter(lin) for lin in block.linears)
    per_token = norms + input_casts + attention + mlp + moe + lora
    saved = tokens * per_token + prefix_keys
    if setup.peft == "adalora":
        # each SVD adapter multiplies A by its singular values every forward: the r x d_in
        # product is kept for the input's gradient, whatever the tokens
        a = FP32 if setup.adapters_compute_fp32 else c
        saved += a * setup.adapter_rank * sum(lin.d_in * lin.copies for lin in block.linears if adapted(lin, setup))
    # Under mixed precision autocast casts each fp32 weight to 16 bits per matmul, and the matmul
    # keeps that copy to compute its input's gradient: trainable or frozen alike.
    if setup.weight_bytes == FP32 and c != FP32 and setup.method != "qlora":
        saved += c * sum(lin.weight_params for lin in block.linears)

    # Backward's peak inside the layer, beside its saved tensors, at one of two moments. Both hold
    # the gradient of the layer's output (the residual stream's dtype), which the residual adds
    # pass on to the MLP and to the attention.
    incoming = rb * h
    mlp_backward = recompute_end = 0
    for width, down, share in _mlp_passes(block):
        # (1) The MLP's backward (one pass at a time), once the down projection's has run and freed
        # what it kept (its input, its adapter's copy): the gradient of the intermediate and the two
        # it splits into (gate, up); without a gate, the activation's input gradient, and under
        # LoRA on down the gradients of its base and adapter paths and their sum.
        grads = 3 if block.gated or down_lora else 2
        down_kept = mlp_bytes * width * int(down_needs_input)
        if down is not None:
            down_kept += adapter(down) // (k if down.role == "expert" else 1)
        mlp_backward = max(mlp_backward, int(share * (grads * mlp_bytes * width - down_kept)))
        # (2) The recompute (gradient checkpointing): non-reentrant checkpointing reruns the layer
        # up to the last tensor it saves, the down projection's adapter when down is targeted.
        # At the up projection's (fc1's) adapter, the gate and activation outputs are made, and its
        # base output, scaled adapter output and their sum are alive: two intermediates more than
        # the MLP keeps by then, beside an fp32 adapter's copy of the MLP norm's output.
        ups = [lin for lin in block.linears if down is not None and lin.role == down.role
               and not is_down(lin) and lin.d_out == width]
        if setup.low_rank and ups and adapted(ups[-1], setup):
            cast = FP32 * h if adapter_cast and rb != FP32 else 0
            recompute_end = max(recompute_end, int(share * (2 * mlp_bytes * width - down_kept + cast)))
        # At down's adapter, its base output and its input, unless kept, are alive, and an fp32
        # adapter's copy of that input (peft's cast, when it is not fp32 already).
        if down_lora:
            cast = FP32 * width if adapter_cast and mlp_bytes != FP32 else 0
            end = mlp_bytes * h + mlp_bytes * width * int(not down_needs_input) + cast
            recompute_end = max(recompute_end, int(share * end))
    backward = incoming + mlp_backward + _adapter_gradient_temps(block, setup, mlp_bytes)
    if setup.grad_checkpointing:
        # The recompute also holds the residual carried across the MLP, the MLP norm's output when
        # nothing keeps it, an offloaded input brought back to the GPU unless saved (below), and the
        # gradient backward had when it needed the first saved tensor: under LoRA on down, its
        # adapter's scaled output gradient.
        # The first norm saves the layer's input itself when it makes no fp32 copy of it (an fp32
        # residual): offloaded, that is the input brought back; on the GPU, one of the checkpoints,
        # counted there already.
        input_saved = rb == FP32
        mlp_norm_output = norm_out * h * int(not full and False not in kept_by)
        brought_back = rb * h * int(setup.offload_activations and not input_saved)
        recompute_end += incoming + rb * h + mlp_norm_output + brought_back + c * h * int(down_lora)
        backward = max(backward, recompute_end)
        if input_saved and not setup.offload_activations:
            backward -= rb * h
    backward *= tokens
    # DoRA's renormalization runs in the layer's (re)computed forward, before its backward: beside
    # the gradient coming in, not beside backward's own transients
    backward = max(backward, tokens * incoming + dora_transient(block, setup))
    if setup.attention == "eager":
        backward += tokens * arch.num_heads * kv * FP32
    return LayerActivations(saved=saved, checkpoint=tokens * rb * h, backward_transient=backward)


def _adapter_gradient_temps(block: Block, setup: TrainSetup, out_bytes: int) -> int:
    """Per token, what an adapter's own backward adds beside the MLP's at its widest layer: AdaLoRA
    divides its output by the rank count, so the division's gradient is one more output-sized
    tensor in the adapter's dtype; IA3's scale gradient first multiplies the incoming gradient by
    the scaled tensor (a feedforward layer's input, another's output), element by element, before
    it sums over the tokens."""
    mine = [lin for lin in block.linears if adapted(lin, setup)]
    if setup.peft == "adalora":
        adapter_bytes = FP32 if setup.adapters_compute_fp32 else setup.compute_bytes
        return adapter_bytes * max((lin.d_out for lin in mine), default=0)
    if setup.peft == "ia3":
        return out_bytes * max((lin.d_in if is_feedforward(lin) else lin.d_out for lin in mine), default=0)
    return 0


def dora_transient(block: Block, setup: TrainSetup) -> int:
    """DoRA renormalizes each adapted weight every forward (and every recompute), independent of
    the tokens: ``get_lora_weight`` pushes a d_in x d_in identity (the adapter's dtype, and
    autocast's 16-bit copy, kept by lora_A for a backward that never comes) through the adapter
    to get B @ A, then ``get_weight_norm`` adds it, scaled, to the (dequantized) weight. The
    largest adapted layer's moment: the identity and its copy with B @ A, or the copy with
    B @ A, its scaled copy and the sum (peft 0.21 lora/dora.py)."""
    if not (setup.use_dora and setup.low_rank):
        return 0
    c = setup.compute_bytes
    a = FP32 if setup.adapters_compute_fp32 else 2
    worst = 0
    for lin in block.linears:
        if not adapted(lin, setup):
            continue
        copy = c if a != c else 0
        identity = lin.d_in * lin.d_in
        product = lin.d_in * lin.d_out * c
        dequantized = product if setup.method == "qlora" else 0
        at_product = identity * (a + copy) + lin.d_in * setup.lora_r * c + product
        at_sum = identity * (copy or a) + 3 * product + dequantized
        worst = max(worst, at_product, at_sum)
    return worst


@dataclass(frozen=True)
class ActivationPeak:
    """Activation bytes alive at the forward/backward peak."""

    saved: int
    """Saved tensors of all layers (checkpoints only under gradient checkpointing) + the head."""
    working_set: int
    """One layer's recomputed activations and backward gradients (the moving part of backward), less
    what the final norm and the LM head keep (``saved``, ``lm_head_weight_copy``): their backward
    frees it before the layers' backward runs."""
    logits: int
    """Logits and the loss's fp32 buffers at their peak (start of backward)."""
    lm_head_weight_copy: int
    """16-bit autocast copy of an fp32 LM head, kept for its backward."""
    offloaded: int = 0
    """Checkpointed layer inputs held in host RAM (activation offloading), not in ``saved``."""
    layers_saved: int = 0
    """The layers' part of ``saved``: backward frees it layer by layer, from the last layer down."""


def activation_peak(arch: Architecture, setup: TrainSetup) -> ActivationPeak:
    tokens, c, rb, h = setup.model_tokens, setup.compute_bytes, residual_bytes(setup), arch.hidden_size
    saved = offloaded = working = 0
    for block in arch.blocks:
        layer = layer_activations(arch, block, setup)
        recompute = 0
        if not setup.grad_checkpointing:
            saved += block.count * layer.saved
        elif setup.offload_activations:
            # save_on_cpu packs each checkpointed input to host RAM in forward; backward brings the
            # input of the layer it recomputes back to the GPU (layer_activations). The first
            # layer's input stays: peft's enable_input_require_grads makes the embedding output a
            # leaf, which autograd holds for the whole backward.
            offloaded += block.count * layer.checkpoint
            recompute = layer.saved + (layer.checkpoint if setup.is_peft else 0)
        else:
            saved += block.count * layer.checkpoint
            recompute = layer.saved
        working = max(working, recompute + layer.backward_transient)
    # Final norm (fp32 input + output) and the LM head's 16-bit input; their backward has run and
    # freed them before any layer's does.
    layers_saved = saved
    # an fp32 copy in transformers' RMSNorm; Unsloth's keeps its input and 1/rms
    head_side = tokens * ((rb + c) * h + FP32 if fused(arch.blocks[0], setup) else (FP32 + rb + c) * h)
    saved += head_side
    working -= head_side
    # ForCausalLMLoss: logits.float() and log_softmax's output are fp32; at the start of backward
    # the NLL gradient and the log_softmax gradient join them: three fp32 (T, V) buffers. The
    # chunked loss (planner/loss.py) holds them for one chunk, plus the head's 16-bit output, and
    # keeps the hidden states' gradient it computed for backward.
    loss_tokens = tokens if setup.loss != "chunked" else loss_chunk_tokens(tokens, arch.vocab_size, h,
                                                                           setup.loss_chunk_mib * 2**20)
    logits = loss_tokens * arch.vocab_size * 3 * FP32
    if setup.loss == "chunked-output":
        # torchtune's LinearCrossEntropyLoss: every chunk's fp32 log-probabilities saved for
        # backward; as it starts, one chunk's log-probability and logit gradients (fp32) and the
        # logits' gradient cast back to the compute dtype
        chunk = math.ceil(tokens / OUTPUT_CHUNKS)
        logits = tokens * arch.vocab_size * FP32 + chunk * arch.vocab_size * (2 * FP32 + c)
        # a trainable head is used once per chunk: autograd sums its gradient over the chunks, so
        # the running sum and the current chunk's are alive together
        logits += arch.vocab_size * h * trainable_head_bytes(setup)
    if setup.loss == "chunked":
        logits += loss_tokens * arch.vocab_size * c + tokens * h * c
        head_b = trainable_head_bytes(setup)
        if head_b:
            # a trainable head's gradient: the sum over the chunks so far and the current chunk's,
            # and under autocast an fp32 head's gradient comes through its 16-bit copy's first
            logits += arch.vocab_size * h * (2 * head_b + (c if head_b != c else 0))
    if arch.logit_softcap:
        logits += loss_tokens * arch.vocab_size * c  # tanh's output, kept for its backward
    head_copy = 0
    if setup.fp32_weights_compute and c != FP32:
        head_copy = c * arch.vocab_size * h
    if setup.loss == "chunked":
        # the chunked loss casts the head chunk by chunk and has its gradients before backward
        # starts: the copy is one of the loss's transients, not kept for backward
        logits, head_copy = logits + head_copy, 0
    # the head's backward frees its copy before any layer's backward runs
    working -= head_copy
    if setup.method == "full" and arch.tie_word_embeddings and not setup.optimizer_in_backward:
        # a tied head's weight gradient waits in autograd's buffer for the embedding's gradient,
        # which comes after the last layer's backward (stepped in backward: memory.py's flight)
        working += arch.vocab_size * h * setup.weight_bytes
    return ActivationPeak(saved=saved, working_set=working, logits=logits, lm_head_weight_copy=head_copy,
                          offloaded=offloaded, layers_saved=layers_saved)
