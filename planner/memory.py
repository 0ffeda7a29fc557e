"""The analytic memory estimator: one training step's peak GPU memory, term by term.

peak_allocated = persistent + max(forward/backward transient, optimizer-step transient)
    persistent  = weights + quant_state + adapters + optimizer state (planner/params.py),
                  + gradients when accumulation keeps them through forward
    fwd/bwd     = saved activations + max(loss buffers, one layer's backward working set)
                  + the gradients backward has made by then + workspace
    optimizer   = every gradient + AdamW's temporaries (foreach on a GPU, tensor by tensor on the CPU)
peak_reserved  = peak_allocated + allocator_slack (caching-allocator fragmentation of transients)
device_used    = peak_reserved + cuda_context + paged optimizer state (what nvidia-smi shows)

References: Rajbhandari et al. 2020, "ZeRO" (partitioning of states, gradients and parameters);
the per-parameter bytes: planner/params.py; activations: planner/activations.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from planner.activations import FP32, ActivationPeak, activation_peak, trainable_head_bytes
from planner.batch_shape import longest_run
from planner.calibration import ALLOCATOR_SLACK, CUBLAS_WORKSPACE, CUDA_CONTEXT
from planner.catalog import Architecture, ModelSpec
from planner.errors import PlannerError
from planner.fused_kernels import fused
from planner.gathering import gathered
from planner.loss import OUTPUT_CHUNKS, loss_chunk_tokens
from planner.options import TrainSetup
from planner.params import Params, importance_state, optimizer_state, paged_state_bytes, params
from planner.stacks import load_stack

MOE_PER_EXPERT = ("one nn.Linear per expert projection, as checkpoints store them and the trainer builds them, so "
                  "experts are quantized and adapted expert by expert; the router stays unquantized, without LoRA")
"""The MoE layout LoRA and QLoRA assume (planner/simulate/moe_layout.py builds it)."""
MOE_FUSED = "transformers' fused experts (3-D weights, grouped matmul)"
"""The MoE layout full fine-tuning assumes."""


@dataclass(frozen=True)
class Breakdown:
    """Bytes per GPU at the peak, by what holds them (the keys of ``estimate --json``)."""

    weights: int
    quant_state: int
    adapters: int
    gradients: int
    optimizer: int
    paged_optimizer: int
    """Optimizer state a paged bitsandbytes optimizer keeps in CUDA managed memory: device memory
    outside PyTorch's allocator (not in peak allocated or reserved), which the driver can move to
    host RAM under pressure (planner/params.py)."""
    activations: int
    logits: int
    workspace: int
    cuda_context: int
    allocator_slack: int


@dataclass(frozen=True)
class Estimate:
    model: str
    setup: TrainSetup
    params_total: int
    params_trainable: int
    breakdown: Breakdown
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    host_bytes: int
    """Host RAM holding offloaded or paged state (0 when nothing leaves the GPU)."""
    peak_phase: str
    """``forward/backward`` or ``optimizer step``: where the peak happens."""
    assumptions: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """What makes this estimate a poor guide to the run (shown first): a sequence beyond the
    model's context, a base format no trainer here runs."""

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "params": {"total": self.params_total, "trainable": self.params_trainable},
            "bytes": asdict(self.breakdown),
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "device_used_bytes": self.device_used_bytes,
            "host_bytes": self.host_bytes,
            "memory_savers": memory_savers(self.setup),
            "stack": load_stack(self.setup.stack).to_json(self.setup),
            "peak_phase": self.peak_phase,
            "assumptions": list(self.assumptions),
            "warnings": list(self.warnings),
        }


def memory_savers(setup: TrainSetup) -> dict[str, object]:
    """The memory-saving switches of a setup, as ``--json`` reports them (docs/memory-savers.md)."""
    return {"loss": setup.loss, "kbit_upcast": setup.kbit_prepare, "offload_activations": setup.offload_activations,
            "optimizer_in_backward": setup.optimizer_in_backward}


def check_setup(arch: Architecture, setup: TrainSetup) -> None:
    """What a setup must satisfy for this particular model (TrainSetup checks what holds for any).

    The LoRA rank: ``B @ A`` factors a d_out x d_in update through r dimensions, so a rank above
    the layer's width adds parameters and no expressiveness; every adapted layer reads or writes
    the hidden size. Checked before anything is built: ``simulate`` would otherwise spend minutes
    and gigabytes on adapters of rank 100000.
    """
    if setup.low_rank and setup.adapter_rank > arch.hidden_size:
        name = "adalora_init_r" if setup.adapter_rank != setup.lora_r else "lora_r"
        raise PlannerError(f"--{name.replace('_', '-')} {setup.adapter_rank} exceeds the model's hidden size "
                           f"{arch.hidden_size}; LoRA rank must be at most the layer width", name)


DEVICES = ("cuda", "cpu")


def estimate(model: ModelSpec, setup: TrainSetup, device: str = "cuda") -> Estimate:
    """Predict peak GPU memory (per GPU) for one training step of ``model`` under ``setup``.

    ``device="cpu"`` predicts a CPU run's live tensor bytes (what trainer/tensor_memory.py
    measures): the same tensors, without cuBLAS's workspace, the CUDA context or a caching
    allocator's slack (reserved = allocated = device used)."""
    if device not in DEVICES:
        raise PlannerError(f"device '{device}' is not one of: {', '.join(DEVICES)}", "device")
    cuda = device == "cuda"
    cublas, context = (CUBLAS_WORKSPACE, CUDA_CONTEXT) if cuda else (0, 0)
    arch = model.arch
    check_setup(arch, setup)
    notes: list[str] = list(model.assumptions)
    asked = setup  # what the estimate is of: its cut stays the user's, even where memory is planned shorter
    if (longest := longest_run(setup)) is not setup:
        notes.append(f"the data's longest example is {longest.seq_len:,} tokens: unpacked, no micro-batch is "
                     f"padded beyond it (planned there, not at --seq-len {setup.seq_len:,})")
        setup = longest
    total = model.total_params
    p = params(arch, setup, total)
    gradients = p.trainable_bytes
    optimizer, opt_temp = optimizer_state(setup, p, cuda)
    optimizer += importance_state(setup, p)
    # a CPU run's "host" is the memory it trains in: offloaded checkpoints stay live tensors there
    acts = activation_peak(arch, setup if cuda else replace(setup, offload_activations=False))
    n, shard = setup.num_gpus, setup.sharding
    flight = _Flight()
    if setup.optimizer_in_backward:
        flight = _in_backward(arch, setup, p, opt_temp)
        gradients, opt_temp = 0, 0
    elif setup.gradient_accumulation_steps == 1 and shard != "ddp":
        flight = _fresh_gradients(arch, setup, p, acts, n if shard != "none" else 1)
        gradients = 0
    weights, quant_state, adapters = p.weights, p.quant_state, p.adapters
    whole = gathered(arch, setup)
    host = acts.offloaded
    if shard == "ddp":
        gradients += p.trainable_bytes  # DDP's reducer keeps its own bucket copy of every gradient
    if shard in ("zero2", "fsdp", "zero3"):
        gradients, optimizer, opt_temp = gradients // n, optimizer // n, opt_temp // n
    if shard in ("fsdp", "zero3"):
        weights, quant_state, adapters = weights // n, quant_state // n, adapters // n
    if setup.offload in ("optimizer", "params"):
        host += optimizer
        optimizer, opt_temp = 0, 0
    if setup.offload == "params":
        # each sharded gradient goes to host RAM after its reduce-scatter; on the GPU stay the
        # gathered layers, the tail, and one layer's unsharded gradient until its reduce-scatter
        # (torch FSDP2 CPUOffloadPolicy: post_backward copies the reduced shard to the CPU)
        host += weights + max(gradients, flight.end[0])
        weights, gradients = 0, 0
        flight = replace(flight, head=(0, flight.head[1]), layer=(0, flight.layer[1]), end=(0, flight.end[1]),
                         other_layer=None)
    # bitsandbytes pages large tensors' state on a GPU only (on the CPU it falls back to torch tensors)
    paged = min(optimizer, paged_state_bytes(arch, setup) // (n if shard in ("zero2", "fsdp", "zero3") else 1)
                if cuda else 0)
    optimizer -= paged
    if paged:
        notes.append(f"paged optimizer: {paged / 2**30:.2f} GiB of its state in CUDA managed memory, outside "
                     "PyTorch's allocated and reserved counts; the driver moves it to host RAM under memory "
                     "pressure (slower steps, no OOM)")

    dequant = 0
    if setup.method == "qlora":
        big = arch.largest_linear()
        dequant = big.d_in * big.d_out * setup.compute_bytes  # one weight dequantized at a time
    workspace_fb = cublas + dequant
    # Backward's two candidate peaks: its start (the loss's buffers) and a layer's recompute. Under
    # the optimizer step in backward the head steps at the start: with the standard loss once its
    # buffers have shrunk to the 16-bit logits' gradient; the chunked loss already counts the head's
    # gradient among its buffers, so only the step's temporaries add.
    loss_part, head = acts.logits, (0, flight.head[1]) if setup.loss == "chunked" else flight.head
    if setup.loss == "standard" and any(head):
        shrunk = setup.model_tokens * arch.vocab_size * setup.compute_bytes
        loss_part, head = (shrunk, head) if shrunk + sum(head) > acts.logits else (acts.logits, (0, 0))
    # the moments forward/backward peaks at, each with the parameters gathered whole then (sharded runs)
    # the loss inside the forward (its 16-bit logits, their fp32 copy and log-softmax, for the standard
    # loss) matters only beside a sharded run's extra gathered bytes there: otherwise it is backward's
    forward_loss = (setup.model_tokens * arch.vocab_size * (setup.compute_bytes + 2 * FP32)
                    if setup.loss == "standard" else loss_part) if whole.at_loss_forward else 0
    held = {"loss": whole.at_loss, "loss_forward": whole.at_loss_forward, "layer": whole.at_layer,
            "copy_out": whole.at_copy_out}
    own = {"loss": loss_part + sum(head), "loss_forward": forward_loss,
           "layer": acts.working_set + sum(flight.layer) - flight.freed, "copy_out": 0}
    moments = {m: own[m] + held[m] for m in held}
    moment = max(moments, key=moments.__getitem__)  # the first of equals: the loss
    fwd_bwd = acts.saved + acts.lm_head_weight_copy + moments[moment] + workspace_fb
    # the optimizer step: after backward, or in backward the embedding's, the last to complete
    step = opt_temp + sum(flight.end) + cublas
    if fwd_bwd >= step:
        phase = "forward/backward"
        in_flight = {"layer": flight.layer, "loss": head}.get(moment, (0, 0))
        activations = acts.saved + acts.lm_head_weight_copy
        if moment == "layer":
            activations += acts.working_set - flight.freed
        logits = {"loss": loss_part, "loss_forward": forward_loss}.get(moment, 0)
        gradients += in_flight[0]
        workspace = workspace_fb + in_flight[1] + held[moment]
    else:
        phase, activations, logits, workspace = "optimizer step", 0, 0, step - flight.end[0]
        gradients += flight.end[0]
    peak_allocated = weights + quant_state + adapters + gradients + optimizer + activations + logits + workspace

    def with_slack(total: int, new_gradient: int) -> int:
        """A phase's bytes beyond what persists, and the allocator's slack over its transients."""
        return total + int(ALLOCATOR_SLACK * (total - new_gradient))

    # Reserved memory is the larger of the two phases' (the phase with the most allocated is not
    # always the one with the most reserved: the step's transients are fewer). FSDP frees gathered
    # layers on its all-gather stream: the compute stream cannot reuse those blocks at once, so
    # one more gathered set stays reserved.
    # Within forward/backward every candidate peak counts: one with less allocated may carry more
    # transients.
    chosen = fwd_bwd if phase == "forward/backward" else step
    fb_base = fwd_bwd - moments[moment]
    layers = [(flight.layer[0], flight.freed)] + ([flight.other_layer] if flight.other_layer else [])
    top = max([with_slack(fb_base + moments["loss"], head[0]), with_slack(fb_base + moments["loss_forward"], 0),
               with_slack(fb_base + moments["copy_out"], 0),
               with_slack(step, flight.end[0])]
              + [with_slack(fb_base + acts.working_set + grad + flight.layer[1] - freed + whole.at_layer, grad)
                 for grad, freed in layers])
    slack = top - chosen + whole.stream_held if cuda else 0
    breakdown = Breakdown(weights, quant_state, adapters, gradients, optimizer, paged, activations, logits,
                          workspace, context, slack)
    notes += _assumptions(arch, setup) + load_stack(setup.stack).assumptions(setup)
    return Estimate(
        model=model.name,
        setup=asked,
        params_total=total,
        params_trainable=p.trainable,
        breakdown=breakdown,
        peak_allocated_bytes=peak_allocated,
        peak_reserved_bytes=peak_allocated + slack,
        device_used_bytes=peak_allocated + slack + context + paged,
        host_bytes=host,
        peak_phase=phase,
        assumptions=tuple(notes),
        warnings=tuple(_warnings(arch, setup)),
    )


@dataclass(frozen=True)
class _Flight:
    """(gradient, step temporaries) bytes alive under the optimizer step in backward."""

    head: tuple[int, int] = (0, 0)
    """As backward starts: an untied LM head's, stepped at once; a tied one's gradient, held."""
    layer: tuple[int, int] = (0, 0)
    """Through the layers' backward: the largest layer weight's, and a tied embedding's gradient,
    complete only at backward's end (its last use is the input embedding)."""
    end: tuple[int, int] = (0, 0)
    """At backward's end, with every activation freed: the input embedding's gradient (beside a
    tied head's, waiting) and its step's temporaries."""
    freed: int = 0
    """Saved activations of the layers whose backward has run by the ``layer`` peak."""
    other_layer: tuple[int, int] | None = None
    """(gradient, freed) at the layers' other candidate peak: less allocated, but its transients
    can hold more reserved memory."""


def _fresh_gradients(arch: Architecture, setup: TrainSetup, p: Params, acts: ActivationPeak, shards: int) -> _Flight:
    """Gradients without accumulation: none exist through forward (the Trainer's
    ``zero_grad(set_to_none=True)`` after every step); backward allocates the head's, then each
    layer's as it frees that layer's saved activations, then the embedding's. With the same
    activations (a) and gradients (g) per layer, live bytes through the layers change by g - a per
    layer, so the peak is at the top layer (a >= g) or the bottom one (g > a).

    Sharded over ``shards`` GPUs a layer keeps 1/shards of its gradient; the whole gradient, in the
    compute dtype, exists only until its reduce-scatter (FSDP2's ``post_backward``), one layer's at
    a time."""
    head = trainable_head_bytes(setup) * arch.vocab_size * arch.hidden_size // shards
    if setup.method == "full" and arch.tie_word_embeddings:
        head = 0  # a tied head's gradient waits in autograd's buffer: activations.py counts it
    n = arch.num_layers
    a, g = acts.layers_saved / n, p.layer_bytes / n / shards
    unsharded = int(p.layer_bytes / n * setup.compute_bytes * p.trainable / p.trainable_bytes) if shards > 1 else 0
    top, bottom = (int(head + g), 0), (int(head + n * g), int((n - 1) * a))  # (gradient, freed)
    (grad, freed), other = (bottom, top) if g > a else (top, bottom)
    return _Flight(head=(head, 0), layer=(grad, unsharded), end=(p.trainable_bytes // shards, 0), freed=freed,
                   other_layer=other)

def _in_backward(arch: Architecture, setup: TrainSetup, p: Params, opt_temp: int) -> _Flight:
    """Each gradient lives from its accumulation to its own parameter's step (torchtune's
    optimizer_in_bwd); the optimizer's temporaries come per parameter, inside backward."""
    grad_per_element = p.trainable_bytes / p.trainable
    temp_per_element = opt_temp / (p.largest if setup.optimizer == "adafactor" else p.trainable)

    def flight(elements: int) -> tuple[int, int]:
        return int(elements * grad_per_element), int(elements * temp_per_element)

    big = arch.largest_linear()
    layer_grad, layer_temp = flight(big.d_in * big.d_out)
    embed_grad, embed_temp = flight(arch.embed_params)
    if arch.lm_head_params:
        return _Flight(head=flight(arch.lm_head_params), layer=(layer_grad, layer_temp), end=(embed_grad, embed_temp))
    return _Flight(head=(embed_grad, 0), layer=(layer_grad + embed_grad, layer_temp),
                   end=(2 * embed_grad, embed_temp))


def _loss_words(arch: Architecture, setup: TrainSetup) -> str:
    if setup.loss == "standard":
        return "loss: transformers ForCausalLMLoss (fp32 logits copy, log_softmax, no chunking)"
    if setup.loss == "chunked-output":
        return (f"loss: LM head and cross-entropy on {OUTPUT_CHUNKS} token chunks, each upcast to fp32, every "
                "chunk's fp32 log-probabilities saved for backward (torchtune's LinearCrossEntropyLoss)")
    chunk = loss_chunk_tokens(setup.model_tokens, arch.vocab_size, arch.hidden_size, setup.loss_chunk_mib * 2**20)
    return (f"loss: chunked LM head + cross-entropy, {chunk:,} tokens per chunk (fp32 buffers of one chunk; the "
            "hidden states' gradient kept for backward)")


_PEFT_WORDS = {
    "adalora": ("AdaLoRA (peft AdaLoraConfig): SVD adapters built at rank {s.adapter_rank}, pruned to {s.lora_r} on "
                "average by masking (memory stays at the starting rank); its rank allocator keeps three copies of "
                "the adapters (importance and two moving averages)"),
    "ia3": ("IA3 (peft IA3Config): one trained scale per output of keys and values and per input of the MLP's "
            "down projection; each keeps the tensor it scales for the scale's gradient"),
    "prompt": ("prompt tuning (peft PromptTuningConfig): {s.virtual_tokens} trained virtual tokens prepended to "
               "every sample, so every layer runs {s.model_seq_len:,} positions"),
    "prefix": ("prefix tuning (peft PrefixTuningConfig): a trained key and value for {s.virtual_tokens} virtual "
               "tokens in every layer; each attention runs over {s.kv_len:,} keys"),
}


def _assumptions(arch: Architecture, setup: TrainSetup) -> list[str]:
    if any(fused(b, setup) for b in arch.blocks):
        kernels = "Unsloth's fused LoRA kernels in every dense layer (planner/fused_kernels.py), no torch.compile"
    elif setup.kernels == "compile":
        kernels = ("torch.compile: its fused kernels are timed (planner/traffic.py); their activations are counted "
                   "as eager PyTorch's, though inductor may recompute some instead of keeping them")
    else:
        kernels = ("eager PyTorch: no torch.compile, whose fused kernels can keep fewer activations (every "
                   "stack's default)")
    out = [_loss_words(arch, setup), kernels]
    if setup.optimizer_in_backward:
        out.append("optimizer step in backward: each parameter updated as soon as its gradient is accumulated, "
                   "then the gradient freed (one layer weight's gradient and step temporaries at a time, and a "
                   "tied embedding's); no gradient clipping or accumulation")
    elif setup.gradient_accumulation_steps > 1:
        out.insert(0, f"gradients stay allocated through forward (accumulation over "
                      f"{setup.gradient_accumulation_steps} micro-batches), freed after the step")
    elif setup.sharding not in ("none", "ddp"):
        out.insert(0, "gradient shards counted through forward, as with accumulation (sharded runs: not modelled "
                      "layer by layer)")
    else:
        out.insert(0, "no gradient accumulation: gradients freed after each step (zero_grad set_to_none), "
                      "backward allocates them layer by layer")
    if setup.offload_activations:
        out.append("activation offloading: each checkpointed layer input in pinned host RAM (transformers' "
                   "offload=True, torch save_on_cpu), one back on the GPU while its layer is recomputed")
    if setup.method == "qlora":
        out.append("prepare_model_for_kbit_training: embeddings, LM head and norms in fp32" if setup.fp32_unquantized
                   else "non-quantized weights kept in the 16-bit load/storage dtype")
    if setup.use_dora:
        out.append("DoRA (peft use_dora): a trained magnitude per output row; each adapted layer keeps its base "
                   "and adapter outputs for backward and renormalizes its weight every forward and recompute "
                   "(a d_in x d_in identity through the adapter, then W + BA in 16 bits)")
    if setup.is_peft and setup.peft != "lora":
        out.append(_PEFT_WORDS[setup.peft].format(s=setup))
    if arch.is_moe:
        out.append(f"MoE layout: {MOE_PER_EXPERT}" if setup.is_peft else f"MoE layout: {MOE_FUSED}, all trained")
        out.append("MoE activations assume balanced routing (tokens x top_k spread over the experts)")
    return out


def _warnings(arch: Architecture, setup: TrainSetup) -> list[str]:
    out = []
    if arch.max_position_embeddings and setup.seq_len > arch.max_position_embeddings:
        out.append(f"seq_len {setup.seq_len:,} exceeds the model's context ({arch.max_position_embeddings:,} "
                   "positions, max_position_embeddings): it needs RoPE scaling to train well")
    if setup.method == "qlora" and setup.quant == "2bit":
        out.append("2-bit base (HQQ-style, groups of 64): an estimate only, the trainer does not offer it")
    return out
