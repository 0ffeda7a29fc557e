"""Time, energy and money of a fine-tuning run: FLOPs per token over achieved FLOP/s.

flops/token = forward + backward to the activations + weight gradients (trainable only)
              + attention's sequence-dependent term + one more forward of the layers under
              checkpointing + LoRA adapter FLOPs
step time   = each weight's GEMM on the roofline: the longer of its FLOPs / (peak x utilization)
              and its operands' bytes / bandwidth; attention's FLOPs / (peak x utilization)
              + the memory-bound kernels' bytes over bandwidth (planner/traffic.py: norms, RoPE,
                activations, residual adds, the loss, LoRA's low-rank matmuls and their passes)
              + QLoRA dequantization (memory-bound)
              + activation offloading's copies (out in forward, back in backward, over PCIe)
              + DoRA's per-step weight renormalization (FLOPs and bytes moved)
              + AdaLoRA's importance scores per optimizer step (bytes moved)
              + the GPU's wait for the host, when a micro-batch's kernels outrun their launches

References:
    Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (C = 6N per token; the
    attention term 2 n_layer n_ctx d_attn per forward token);
    Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters"
    (backward = 2x forward; recomputation adds one forward);
    Hu et al. 2021, "LoRA" (frozen weights need no weight gradients: ~2/3 of full-FT compute);
    Liu et al. 2024, "DoRA" (the weight's column norm recomputed from W + BA every step);
    Dettmers et al. 2023, "QLoRA" (4-bit weights dequantized to 16-bit for every matmul);
    Williams et al. 2009, "Roofline" (a kernel takes the longer of its FLOPs and its bytes);
    transformers ``activation_checkpointing_enable(offload=True)`` (its copies run on the compute
    stream: they add to the step, not overlap it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.activations import activation_peak
from planner.adapted import adapted
from planner.batch_shape import as_run
from planner.calibration import (
    HOST_LINK_BYTES_PER_S,
    HOST_SECONDS_ADALORA_PER_MODULE,
    HOST_SECONDS_PER_LAYER,
    HOST_SECONDS_PER_STEP,
    MATMUL_UTILIZATION,
)
from planner.catalog import Architecture
from planner.catalog.gpus import GpuSpec
from planner.communication import communication_seconds
from planner.options import TrainSetup
from planner.params import params
from planner.traffic import traffic_per_token

# Bytes moved per weight by one dequantization: read the packed 4-bit weight, write 16-bit.
_DEQUANT_BYTES = {"nf4": 0.5 + 2, "fp4": 0.5 + 2, "int8": 1 + 2, "2bit": 0.25 + 2}


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token, by where they go."""

    forward: float
    backward_activations: float
    weight_gradients: float
    attention: float
    recompute: float
    adapters: float

    @property
    def total(self) -> float:
        return (self.forward + self.backward_activations + self.weight_gradients + self.attention
                + self.recompute + self.adapters)


@dataclass(frozen=True)
class StepTime:
    """Seconds of one optimizer step on one GPU, by term (``accumulation`` micro-batches of compute,
    then one update)."""

    matmul: float
    """Every micro-batch's weight GEMMs on the roofline and attention's FLOPs at the achieved rate
    (``matmul_seconds``); LoRA's low-rank products are memory-bound (``traffic``)."""
    traffic: float
    """The memory-bound kernels' bytes (planner.traffic.traffic_per_token) over memory bandwidth."""
    dequant: float
    """QLoRA's 4-bit weights dequantized for every matmul, over memory bandwidth."""
    offload: float
    """Activation offloading's host copies."""
    adapter: float
    """DoRA's weight renormalization and AdaLoRA's importance scores."""
    attention_scores: float
    """Eager attention's passes over every head's score matrix (eager_attention_seconds)."""
    communication: float
    """Collectives over the GPUs' link that compute does not hide (communication_seconds)."""
    host_wait: float
    """Time the GPU waits for the host. The host issues a micro-batch's kernels while the GPU runs
    them (planner.calibration.HOST_SECONDS_PER_LAYER), and the Trainer waits for the GPU at the
    end of every micro-batch (its NaN check reads the loss: transformers 5.24 trainer.py:1919-1922):
    each micro-batch takes the longer of the two. The loop's own step (HOST_SECONDS_PER_STEP)
    runs beside the update's kernels the same way."""
    optimizer: float
    """The update over every trainable parameter: parameters, gradients and the optimizer's state
    read and written once, over memory bandwidth (memory-bound elementwise kernels)."""
    clipping: float
    """Gradient clipping (the Trainer's ``max_grad_norm`` 1.0): every gradient read for the norm,
    then read and written scaled."""

    def shares(self) -> dict[str, float]:
        """Each term's share of the step (by ``TERM_NAMES``), largest first; terms taking no time left out."""
        total = self.total
        parts = {name: getattr(self, term) / total for term, name in TERM_NAMES.items() if getattr(self, term) > 0}
        return dict(sorted(parts.items(), key=lambda kv: -kv[1]))

    @property
    def total(self) -> float:
        return (self.matmul + self.traffic + self.dequant + self.offload + self.adapter + self.attention_scores
                + self.communication + self.host_wait + self.optimizer + self.clipping)


def fmt_shares(shares: Mapping[str, float], at_least: float = 0.05, most: int | None = None) -> str:
    """``shares`` (``StepTime.shares``) in words, each term taking at least ``at_least`` of the step:
    "matmuls 65%, memory-bound kernels 35%"."""
    return ", ".join([f"{name} {share:.0%}" for name, share in shares.items() if share >= at_least][:most])


TERM_NAMES = {"matmul": "matmuls", "traffic": "memory-bound kernels", "dequant": "dequantization",
              "offload": "offload copies", "adapter": "adapter upkeep", "attention_scores": "eager attention scores",
              "communication": "communication", "host_wait": "waiting for the host", "optimizer": "optimizer step",
              "clipping": "gradient clipping"}
"""How plans name each of ``StepTime``'s terms."""


@dataclass(frozen=True)
class RunCost:
    tokens_per_second: float
    """Across all GPUs of the run."""
    seconds: float | None
    """For dataset_tokens x epochs; None without a dataset size."""
    energy_kwh: float | None
    cost_usd: float | None
    utilization: float
    """The matmuls' achieved fraction of the card's peak FLOP/s (planner.calibration.MATMUL_UTILIZATION)."""
    flops_per_token: FlopsPerToken
    step: StepTime
    """The optimizer step's seconds by term."""
    micro_batches: int = 1

    @property
    def dequant_seconds_per_step(self) -> float:
        """One micro-batch's QLoRA dequantization (0 without it)."""
        return self.step.dequant / self.micro_batches

    @property
    def offload_seconds_per_step(self) -> float:
        """One micro-batch's activation offloading copies (0 without it)."""
        return self.step.offload / self.micro_batches

    @property
    def hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600


def active_matmul_params(arch: Architecture) -> tuple[float, float]:
    """(parameters each token multiplies through, the part in routed experts): embeddings are a
    lookup, not a matmul; the LM head is a matmul; a token visits top_k of the routed experts."""
    dense = routed = 0.0
    for block in arch.blocks:
        for lin in block.linears:
            if lin.role == "expert":
                routed += block.count * lin.d_in * lin.d_out * block.experts_per_token
            else:
                dense += block.count * lin.weight_params
    return dense + routed + arch.vocab_size * arch.hidden_size, routed


def flops_per_token(arch: Architecture, setup: TrainSetup) -> FlopsPerToken:
    n_active, _ = active_matmul_params(arch)
    forward = 2 * n_active
    backward_activations = 2 * n_active
    trainable_fraction = 1.0 if setup.method == "full" else 0.0
    weight_gradients = 2 * n_active * trainable_fraction
    # causal attention: QK^T and AV, each 2*s*d per token, halved by the mask (fused kernels skip
    # the masked blocks; eager attention multiplies the whole matrix); backward is 2x (prefix
    # tuning's keys are all visible: its virtual tokens add a whole s x prefix term)
    prefix = setup.kv_len - setup.model_seq_len
    visible = setup.model_seq_len / (1 if setup.attention == "eager" else 2)
    attention_fwd = 2 * arch.num_layers * (visible + prefix) * arch.num_heads * (
        arch.head_dim + arch.v_head_dim)
    attention = 3 * attention_fwd
    adapters = 0.0
    if setup.low_rank:  # IA3's scales are elementwise; prompt and prefix tuning adapt no layer
        for block in arch.blocks:
            for lin in block.linears:
                if adapted(lin, setup):
                    passes = block.experts_per_token if lin.role == "expert" else 1
                    # forward, input gradient and weight gradient of A and B
                    adapters += 6 * block.count * passes * setup.adapter_rank * (lin.d_in + lin.d_out)
    head = 2 * arch.vocab_size * arch.hidden_size  # checkpointing recomputes the layers, not the head
    recompute = (forward - head + attention_fwd + adapters / 3) if setup.grad_checkpointing else 0.0
    return FlopsPerToken(forward, backward_activations, weight_gradients, attention, recompute, adapters)


def matmul_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec, achieved_flops: float,
                   fpt: FlopsPerToken) -> float:
    """One micro-batch's weight matmuls and attention products. Each weight's GEMM (M tokens x K in x
    N out; an expert's M is the tokens routed to it) runs in forward, for the input's gradient, for
    the weight's gradient when it trains, and again in the recompute; it takes the longer of its
    2MKN FLOPs at the achieved rate and its operands' and product's bytes over memory bandwidth
    (the roofline: short steps and narrow models turn memory-bound). Attention's FLOPs (``fpt``,
    ``flops_per_token``'s) run at the achieved rate; LoRA's low-rank products are memory traffic
    (planner/traffic.py)."""
    c, tokens = setup.compute_bytes, setup.model_tokens
    passes = 2 + (setup.method == "full") + setup.grad_checkpointing

    def gemm(m: float, k: int, n: int) -> float:
        return max(2 * m * k * n / achieved_flops, c * (m * k + k * n + m * n) / gpu.bandwidth_bytes_per_s)

    seconds = 0.0
    for block in arch.blocks:
        for lin in block.linears:
            # an expert's copies (one per expert) multiply the tokens routed to them
            m = tokens * block.experts_per_token / lin.copies if lin.role == "expert" else tokens
            seconds += block.count * lin.copies * passes * gemm(m, lin.d_in, lin.d_out)
    head = gemm(tokens, arch.hidden_size, arch.vocab_size) * (3 if setup.method == "full" else 2)
    # forward and backward: a third more recomputed
    attention = fpt.attention * (4 / 3 if setup.grad_checkpointing else 1)
    return seconds + head + tokens * attention / achieved_flops


def _power_watts(gpu: GpuSpec, util: float) -> float:
    # A training GPU draws close to its limit once compute-bound; idle-ish at low utilization.
    return gpu.tdp_watts * min(1.0, 0.4 + util)


def run_cost(arch: Architecture, setup: TrainSetup, gpu: GpuSpec, dataset_tokens: int | None = None,
             epochs: float = 1.0, usd_per_hour: float | None = None,
             usd_per_kwh: float | None = None, utilization: float = MATMUL_UTILIZATION) -> RunCost:
    """Throughput, duration, energy and cost of training ``arch`` under ``setup`` on ``gpu`` x num_gpus.

    Cost is the cloud price per GPU-hour when given (or the catalog's snapshot), else local
    electricity at ``usd_per_kwh``; None when neither is known. ``utilization``: the matmuls'
    achieved fraction of peak (the calibration's, unless a fit tries another). Throughput counts
    the examples' own tokens, not padding (planner/batch_shape.py ``as_run``).
    """
    setup, data_share = as_run(setup)
    fpt = flops_per_token(arch, setup)
    util = min(utilization, 1.0)  # never above the hardware peak
    achieved = gpu.peak_flops * util
    # the model runs prompt tuning's virtual tokens too; throughput counts the data's tokens
    micro = setup.gradient_accumulation_steps
    tokens_per_step = setup.batch_size * setup.seq_len * micro
    dequant_s = 0.0
    if setup.method == "qlora":
        passes = 2 + (1 if setup.grad_checkpointing else 0)  # forward, backward, recompute
        dequant_s = (passes * arch.linear_weight_params * _DEQUANT_BYTES[setup.quant or "nf4"]
                     / gpu.bandwidth_bytes_per_s)
    update, clip = update_seconds(arch, setup, gpu)
    matmul, offload = matmul_seconds(arch, setup, gpu, achieved, fpt), offload_seconds(arch, setup)
    traffic = setup.model_tokens * traffic_per_token(arch, setup).total / gpu.bandwidth_bytes_per_s
    dora = dora_seconds(arch, setup, gpu, achieved)
    compiled = setup.kernels == "compile"
    host = HOST_SECONDS_PER_LAYER[(setup.low_rank, setup.grad_checkpointing, compiled)] * arch.num_layers
    scores = eager_attention_seconds(arch, setup, gpu)
    compute = matmul + traffic + dequant_s + offload + dora + scores  # one micro-batch on the GPU
    comm = communication_seconds(arch, setup, gpu)
    # collectives run on their own stream beside compute: a layer's gathers and reductions beside the
    # micro-batch, the step's gradient reduction beside the last micro-batch's backward (2/3 of it)
    if comm.per_micro_batch:
        exposed = micro * (comm.unhidden + max(0.0, comm.per_micro_batch - comm.unhidden - compute))
    else:
        exposed = comm.unhidden + max(0.0, comm.per_step - comm.unhidden - 2 / 3 * compute)
    step = StepTime(matmul=micro * matmul, traffic=micro * traffic, dequant=micro * dequant_s, offload=micro * offload,
                    adapter=micro * dora + importance_seconds(arch, setup, gpu), attention_scores=micro * scores,
                    communication=exposed,
                    host_wait=micro * max(0.0, host - compute) + max(0.0, HOST_SECONDS_PER_STEP - update - clip),
                    optimizer=update, clipping=clip)
    n = setup.num_gpus
    tps = tokens_per_step * data_share / step.total * n

    seconds = energy = cost = None
    if dataset_tokens:
        seconds = dataset_tokens * epochs / tps
        energy = _power_watts(gpu, util) * n * seconds / 3.6e6
        price = usd_per_hour
        listed = gpu.price()
        if price is None and listed is not None:
            price = listed.usd_per_hour
        if price is not None:
            cost = price * n * seconds / 3600
        elif usd_per_kwh is not None:
            cost = energy * usd_per_kwh
    return RunCost(tps, seconds, energy, cost, util, fpt, step, micro)


def dora_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec, achieved_flops: float) -> float:
    """DoRA's weight renormalization, once per forward and per recompute of every micro-batch,
    whatever its tokens (peft lora/dora.py): a d_in x d_in identity made and pushed through A and
    B (2 d_in^2 r + 2 d_in r d_out FLOPs), and the d_in x d_out product scaled, added to the
    weight and normed: matmul FLOPs at the achieved rate, the identity (adapter dtype, its 16-bit
    copy, read back) and the product's three 16-bit passes over memory bandwidth."""
    if not (setup.use_dora and setup.low_rank):
        return 0.0
    passes = 2 if setup.grad_checkpointing else 1
    c, a = setup.compute_bytes, 4 if setup.adapter_dtype == "fp32" else 2
    flops = moved = 0.0
    for block in arch.blocks:
        for lin in block.linears:
            if adapted(lin, setup):
                count = block.count * lin.copies
                flops += count * 2 * setup.lora_r * lin.d_in * (lin.d_in + lin.d_out)
                moved += count * (lin.d_in * lin.d_in * (a + 2 * c) + 6 * lin.d_in * lin.d_out * c)
    return passes * (flops / achieved_flops + moved / gpu.bandwidth_bytes_per_s)


_STATE_BYTES = {"adamw_torch_fused": None, "adamw_8bit": 1, "paged_adamw_8bit": 1, "paged_adamw_32bit": 4}
"""Bytes per element of each fused AdamW's two moments (None: the parameter's own dtype)."""

FOREACH_ADAMW_PASSES = 18
"""Element passes of torch.optim.AdamW's default multi-tensor path (``adamw_torch``; torch 2.13
optim/adam.py ``_multi_tensor_adam``, non-capturable branch), one per foreach kernel's operand:
lerp (m, g read, m written), mul (v), addcmul (v, g read, v written), sqrt (v read, s written), div
and add (s), addcdiv (p, m, s read, p written); every tensor in the parameter's dtype. The
Trainer's default weight decay 0 skips the decay's pass. The fused kernels (``adamw_torch_fused``,
bitsandbytes') read p, g, m and v once and write p, m and v."""


def update_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec) -> tuple[float, float]:
    """(optimizer update, gradient clipping) seconds per optimizer step on one GPU, from the bytes
    the elementwise kernels move over memory bandwidth: fused AdamW reads the parameter, its gradient
    and both moments and writes the parameter and the moments, the multi-tensor one passes over them
    ``FOREACH_ADAMW_PASSES`` times; SGD reads the parameter and gradient and
    writes the parameter; Adafactor's factored moments are small beside the parameter's own two
    passes. Clipping (off under the optimizer in backward, which has no moment to clip at) reads
    every gradient for the norm, then reads and writes it scaled. Sharded runs update their shard."""
    p = params(arch, setup, arch.total_params)
    n = p.trainable / (setup.num_gpus if setup.sharding in ("zero2", "fsdp", "zero3") else 1)
    pb = p.trainable_bytes / max(p.trainable, 1)  # bytes per trainable element (and per gradient)
    if setup.optimizer == "adamw_torch":
        per_element = FOREACH_ADAMW_PASSES * pb
    elif setup.optimizer in _STATE_BYTES:
        state = _STATE_BYTES[setup.optimizer] or pb
        per_element = 3 * pb + 4 * state
    elif setup.optimizer == "sgd":
        per_element = 3 * pb
    else:  # adafactor
        per_element = 5 * pb
    clip = 0.0 if setup.optimizer_in_backward else 3 * pb * n / gpu.bandwidth_bytes_per_s
    return per_element * n / gpu.bandwidth_bytes_per_s, clip


def importance_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec) -> float:
    """AdaLoRA's upkeep, once per optimizer step: its rank allocator (peft
    ``RankAllocator.update_ipt``: each adapter tensor and its gradient read, its importance and the
    two moving averages read and written, about ten elementwise passes over the adapters' bytes)
    and its orthogonality penalty, dozens of small operations per adapted module, which take the
    host longer to issue than the GPU to run (``HOST_SECONDS_ADALORA_PER_MODULE``, measured)."""
    if setup.peft != "adalora" or not setup.is_peft:
        return 0.0
    adapters = params(arch, setup, 0).layer_bytes  # the adapters' bytes (no base weights counted)
    modules = sum(b.count for b in arch.blocks for lin in b.linears if adapted(lin, setup))
    return max(10 * adapters / gpu.bandwidth_bytes_per_s, modules * HOST_SECONDS_ADALORA_PER_MODULE)


def eager_attention_seconds(arch: Architecture, setup: TrainSetup, gpu: GpuSpec) -> float:
    """Eager attention writes every head's (tokens x keys) scores to memory and passes over them
    elementwise (transformers ``eager_attention_forward``: the product written and scaled, the mask
    added, an fp32 softmax and its cast back, read by the second matmul): 9 c + 8 bytes per score in
    forward for a c-byte compute dtype, twice that in backward, once more in checkpointing's
    recompute, over memory bandwidth. SDPA's and flash-attention's fused kernels keep the scores
    on chip (Dao et al. 2022, "FlashAttention")."""
    if setup.attention != "eager":
        return 0.0
    scores = setup.batch_size * arch.num_heads * setup.model_seq_len * setup.kv_len * arch.num_layers
    forward = 9 * setup.compute_bytes + 8
    return scores * forward * (3 + int(setup.grad_checkpointing)) / gpu.bandwidth_bytes_per_s


def offload_seconds(arch: Architecture, setup: TrainSetup) -> float:
    """Activation offloading: every checkpointed input copied to host RAM and back once per step."""
    if not setup.offload_activations:
        return 0.0
    return 2 * activation_peak(arch, setup).offloaded / HOST_LINK_BYTES_PER_S
