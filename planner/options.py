"""The knobs of a training run that decide its memory: the CLI's OPTIONS as a value.

Names and defaults follow Hugging Face (``TrainingArguments``, ``LoraConfig``,
``BitsAndBytesConfig``) so that a plan reads like the run it describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from planner.errors import PlannerError, shown
from planner.loss import LOSSES
from planner.samples import SampleLengths

METHODS = ("full", "lora", "qlora")
QUANTS = ("nf4", "fp4", "int8")
PRECISIONS = ("bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")
ADAPTER_DTYPES = ("fp32", "bf16")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
              "sgd", "adafactor")
ATTENTIONS = ("sdpa", "flash_attention_2", "eager")
KERNELS = ("eager", "compile", "unsloth")
"""eager: PyTorch's and peft's modules, one kernel per operation; compile: the same modules under
torch.compile, their pointwise chains fused (planner/traffic.py); unsloth: Unsloth's fused LoRA
kernels (planner/fused_kernels.py)."""
SHARDINGS = ("none", "ddp", "fsdp", "zero2", "zero3")
OFFLOADS = ("none", "optimizer", "params")
STACKS = ("hf", "torchtune", "axolotl", "litgpt", "unsloth")
"""Training stacks planned for (planner/stacks.py); ``hf`` is this app's own trainer."""
PEFTS = ("lora", "adalora", "ia3", "prompt", "prefix")
"""The adapter a LoRA/QLoRA run trains (peft): LoRA (DoRA with ``use_dora``), AdaLoRA (Zhang et al.
2023), IA3 (Liu et al. 2022), prompt tuning (Lester et al. 2021), prefix tuning (Li & Liang 2021).
Every one of them trains over a 16-bit (``lora``) or a quantized (``qlora``) base."""
PREFIX_CHECKPOINTING = {"grad_checkpointing": False, "offload_activations": False}
"""Prefix tuning trains without checkpointing (``TrainSetup`` says why): what every plan that turns
into prefix tuning sets."""
PEFT_NAMES = {"lora": "LoRA", "adalora": "AdaLoRA", "ia3": "IA3", "prompt": "prompt tuning", "prefix": "prefix tuning"}
"""How plans, the recommendation and model cards name each adapter (DoRA: LoRA with ``use_dora``)."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PlannerError(f"--{name.replace('_', '-')} '{value}' is not one of: {', '.join(allowed)}", name)


def _compact(x: float) -> str:
    """The shortest exact spelling of a bound: ``65536``, ``1e6``, ``1e15``."""
    spellings = [str(int(x))] if float(x).is_integer() else [repr(float(x))]
    exp = f"{x:.0e}".replace("e+0", "e").replace("e+", "e")
    if float(exp) == x:
        spellings.append(exp)
    return min(spellings, key=len)


@dataclass(frozen=True)
class Bound:
    """The accepted range of one numeric option. Why bounded above at all: a 400-digit batch
    size or 1e300 GiB of GPU memory overflows float arithmetic (a traceback, or Infinity in
    --json output); each upper end is far beyond any real run yet keeps every product finite."""

    low: float
    high: float
    whole: bool = True
    """Integers only (bools are not numbers here)."""
    low_open: bool = False
    """``low`` itself is excluded (epochs > 0, not >= 0)."""
    high_open: bool = False
    """``high`` itself is excluded (dropout < 1, prices < 1e6)."""
    why: str = ""
    """What the upper end means, for the error message, e.g. ``2**24 tokens``."""

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above_low = value > self.low if self.low_open else value >= self.low
        below_high = value < self.high if self.high_open else value <= self.high
        return above_low and below_high

    def describe(self, with_why: bool = True) -> str:
        """E.g. ``a whole number from 1 to 16777216 (2**24 tokens)``, ``a number >= 0 and < 1e6``."""
        why = f" ({self.why})" if self.why and with_why else ""
        if self.whole and not self.low_open and not self.high_open:
            return f"a whole number from {_compact(self.low)} to {_compact(self.high)}{why}"
        low = f"{'>' if self.low_open else '>='} {_compact(self.low)}"
        high = f"{'<' if self.high_open else '<='} {_compact(self.high)}"
        return f"{'a whole number' if self.whole else 'a number'} {low} and {high}{why}"


BOUNDS: dict[str, Bound] = {
    "batch_size": Bound(1, 2**16, why="2**16 samples per GPU"),
    "seq_len": Bound(1, 2**24, why="2**24 tokens"),
    "lora_r": Bound(1, 2**16, why="and at most the model's hidden size"),
    "adalora_init_r": Bound(0, 2**16, why="0: 1.5 x --lora-r"),
    "virtual_tokens": Bound(1, 2**16, why="2**16 tokens"),
    "lora_alpha": Bound(1, 2**20, why="2**20"),
    "lora_dropout": Bound(0.0, 1.0, whole=False, high_open=True),
    "num_gpus": Bound(1, 2**16, why="2**16 GPUs"),
    "gradient_accumulation_steps": Bound(1, 2**20, why="2**20 micro-batches"),
    "loss_chunk_mib": Bound(0, 2**20, why="2**20 MiB = 1 TiB"),
    "dataset_tokens": Bound(1, 10**15, why="tokens"),
    "epochs": Bound(0.0, 1e6, whole=False, low_open=True),
    "gpu_memory_gib": Bound(0.0, 2.0**20, whole=False, low_open=True, why="2**20 GiB = 1 PiB"),
    "host_ram_gib": Bound(0.0, 2.0**24, whole=False, low_open=True, why="2**24 GiB = 16 PiB"),
    "price_per_hour": Bound(0.0, 1e6, whole=False, high_open=True, why="USD per GPU-hour"),
    "electricity_price": Bound(0.0, 1e6, whole=False, high_open=True, why="USD per kWh"),
}
"""Every numeric option of the CLI and the Plan page, by its TrainSetup/argparse name."""


def check_bound(name: str, value: object) -> None:
    """Raise PlannerError naming ``--name`` and its range unless ``value`` lies in ``BOUNDS[name]``."""
    bound = BOUNDS[name]
    if not bound.contains(value):
        raise PlannerError(f"--{name.replace('_', '-')} must be {bound.describe()}, got {shown(value)}", name)


@dataclass(frozen=True)
class TrainSetup:
    """One training configuration, validated at construction."""

    method: str = "lora"
    """``full`` trains every weight; ``lora`` adds adapters to a 16-bit base; ``qlora`` to a quantized base."""
    quant: str | None = None
    """Base-weight format under QLoRA: ``nf4``/``fp4`` (bitsandbytes 4-bit), ``int8`` (LLM.int8),
    or ``2bit`` (HQQ-style, estimate only). None means ``nf4`` for qlora."""
    double_quant: bool = True
    """Quantize the 4-bit block scales again (``bnb_4bit_use_double_quant``)."""
    precision: str = "bf16"
    """``bf16``/``fp16``/``fp32``: weights stored and computed in that dtype. ``*-mixed``: fp32
    weights (the master copy) with 16-bit autocast compute."""
    adapter_dtype: str = "fp32"
    """LoRA weights' dtype; peft keeps them in fp32 by default (``autocast_adapter_dtype``)."""
    optimizer: str = "adamw_torch"
    batch_size: int = 1
    """Micro-batch per GPU."""
    seq_len: int = 2048
    grad_checkpointing: bool = True
    attention: str = "sdpa"
    loss: str = "standard"
    """``standard`` or ``chunked`` (planner/loss.py): how the LM head and cross-entropy run."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("all-linear",)
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool = False
    """DoRA (Liu et al. 2024): each adapted layer also trains a magnitude per output row and
    renormalizes its weight every forward (peft ``LoraConfig(use_dora=True)``)."""
    peft: str = "lora"
    """Which adapter a LoRA/QLoRA run trains (``PEFTS``)."""
    adalora_init_r: int = 0
    """AdaLoRA's starting rank per layer (its budget prunes it to ``lora_r`` on average); 0 means
    1.5 x ``lora_r``, the paper's b(0) = 1.5 b(T)."""
    virtual_tokens: int = 20
    """Prompt and prefix tuning: trained token positions (peft ``num_virtual_tokens``)."""
    num_gpus: int = 1
    sharding: str = "none"
    offload: str = "none"
    kbit_prepare: bool = True
    """QLoRA runs ``prepare_model_for_kbit_training``, which casts every non-quantized weight
    (embeddings, LM head, norms) to fp32."""
    stack: str = "hf"
    """The training stack planned for (planner/stacks.py): names the preset whose knobs this setup
    took; the estimate says which it changed."""
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    """The knobs the user chose: a stack's preset supplies only the others (planner/stacks.py)."""
    loss_chunk_mib: int = 0
    """The chunked loss's chunk size as a budget for one chunk's fp32 logits (Unsloth: 4096); 0:
    the chunk's logits about as large as the hidden states (Liger's rule)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step. Above 1 the gradients stay allocated from one micro-batch's
    backward through the next one's forward; at 1 they are freed after every step (the Trainer's
    ``zero_grad(set_to_none=True)``) and appear layer by layer during backward."""
    optimizer_in_backward: bool = False
    """Full fine-tuning: each parameter is updated, and its gradient freed, as soon as backward has
    produced it (``register_post_accumulate_grad_hook``), so the gradients never exist all at once."""
    offload_activations: bool = False
    """Gradient checkpointing keeps each layer's input in (pinned) host RAM instead of on the GPU
    (transformers' ``activation_checkpointing_kwargs={"offload": True}``, torch's ``save_on_cpu``)."""
    kernels: str = "eager"
    """Which kernels a layer runs (``KERNELS``): fused ones move fewer bytes (planner/traffic.py), and
    Unsloth's fused LoRA kernels keep fewer activations. The activation memory of compiled modules
    is counted as eager's (inductor may recompute some pointwise results instead of saving them)."""
    packing: bool = False
    """Examples concatenated into blocks of exactly ``seq_len`` (the trainer's ``packing``), not each
    micro-batch padded to its longest example: with the data's ``lengths``, what a micro-batch
    computes (planner/batch_shape.py)."""
    lengths: SampleLengths | None = None
    """The data's tokens per example, when measured (planner/samples.py). Unpacked, the time model
    then runs a micro-batch at its expected padded length and counts only the examples' own tokens,
    and memory is planned at the data's longest example when it is shorter than ``seq_len``.
    None: every example fills ``seq_len``. Data, not a knob: no stack sets it, no config stores it."""

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if self.quant is not None:
            if self.method != "qlora":
                raise PlannerError(f"--quant {self.quant} only applies to --method qlora (this is a {self.method} run)",
                                   "quant")
            _choice("quant", self.quant, QUANTS + ("2bit",))
        elif self.method == "qlora":
            object.__setattr__(self, "quant", "nf4")
        _choice("precision", self.precision, PRECISIONS)
        _choice("adapter_dtype", self.adapter_dtype, ADAPTER_DTYPES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("loss", self.loss, LOSSES)
        _choice("kernels", self.kernels, KERNELS)
        _choice("stack", self.stack, STACKS)
        _choice("sharding", self.sharding, SHARDINGS)
        _choice("offload", self.offload, OFFLOADS)
        _choice("peft", self.peft, PEFTS)
        for name in ("batch_size", "seq_len", "lora_r", "lora_alpha", "lora_dropout", "num_gpus",
                     "gradient_accumulation_steps", "loss_chunk_mib", "adalora_init_r", "virtual_tokens"):
            check_bound(name, getattr(self, name))
        if not self.lora_targets or any(not t for t in self.lora_targets):
            raise PlannerError("--lora-targets needs module names such as q_proj,v_proj, or all-linear", "lora_targets")
        if self.num_gpus > 1 and self.sharding == "none":
            object.__setattr__(self, "sharding", "ddp")
        if self.offload_activations and not self.grad_checkpointing:
            raise PlannerError("--offload-activations moves the checkpointed layer inputs to host RAM: it needs "
                               "--grad-checkpointing", "offload_activations")
        if self.use_dora and not self.is_peft:
            raise PlannerError("--use-dora adapts LoRA: it needs --method lora or qlora", "use_dora")
        if self.peft != "lora" and not self.is_peft:
            raise PlannerError(f"--peft {self.peft} trains an adapter: it needs --method lora or qlora", "peft")
        if self.use_dora and self.peft != "lora":
            raise PlannerError(f"--use-dora is a kind of LoRA: it does not combine with --peft {self.peft}", "use_dora")
        if self.adalora_init_r and self.adalora_init_r < self.lora_r:
            raise PlannerError(f"--adalora-init-r {self.adalora_init_r} is below the rank AdaLoRA prunes to "
                               f"(--lora-r {self.lora_r}): give at least {self.lora_r}", "adalora_init_r")
        if self.is_peft and self.peft == "prefix" and self.grad_checkpointing:
            raise PlannerError("--peft prefix needs --no-grad-checkpointing: transformers 5 drops the cache, and with "
                               "it the prefix, inside a checkpointed layer", "grad_checkpointing")
        if self.modules_to_save and self.peft in ("prompt", "prefix"):
            raise PlannerError(f"--modules-to-save trains layers beside weight adapters: --peft {self.peft} adds "
                               "virtual tokens and trains no layer", "modules_to_save")
        if self.optimizer_in_backward and self.method != "full":
            raise PlannerError("--optimizer-in-backward applies to --method full (adapters' gradients are small)",
                               "optimizer_in_backward")
        if self.optimizer_in_backward and self.gradient_accumulation_steps > 1:
            raise PlannerError("--optimizer-in-backward steps in every backward: it needs "
                               "--gradient-accumulation-steps 1", "gradient_accumulation_steps")
        if self.optimizer_in_backward and self.num_gpus > 1:
            raise PlannerError("--optimizer-in-backward plans one GPU: each gradient is used before any "
                               "all-reduce could sum it across GPUs", "optimizer_in_backward")
        if self.offload != "none" and self.sharding not in ("fsdp", "zero2", "zero3"):
            raise PlannerError(f"--offload {self.offload} needs --sharding fsdp, zero2 or zero3", "offload")
        if self.offload == "params" and self.sharding == "zero2":
            raise PlannerError("--offload params needs --sharding fsdp or zero3 (ZeRO-2 keeps whole parameters)",
                               "offload")

    @property
    def fp32_unquantized(self) -> bool:
        """QLoRA weights bitsandbytes left alone end up fp32: prepare_model_for_kbit_training
        upcasts them, sharded or not (FSDP2 all-gathers them in the compute dtype; its uniform
        dtype rule binds only trainable parameters). The FSDP-QLoRA recipe skips the preparation:
        ``--no-kbit-upcast``."""
        return self.method == "qlora" and self.kbit_prepare

    @property
    def fp32_weights_compute(self) -> bool:
        """Some weights compute in fp32 (fp32 masters under autocast, QLoRA's upcast ones), which
        promotes the residual stream and has autocast keep a 16-bit copy of the LM head; not on
        sharded GPUs, whose all-gather hands every layer its parameters in the compute dtype
        (FSDP2's ``MixedPrecisionPolicy(param_dtype)``; DeepSpeed ZeRO-3 stores them in it)."""
        sharded_16bit = self.sharding in ("fsdp", "zero3") and self.precision != "fp32"
        return (self.weight_bytes == 4 or self.fp32_unquantized) and not sharded_16bit

    @property
    def fp32_masters(self) -> bool:
        """Sharded 16-bit runs train fp32 copies: accelerate's FSDP2 preparation upcasts every
        trainable parameter to fp32 under mixed precision and computes in the autocast dtype
        (accelerate 1.15 ``fsdp2_prepare_model``: "Upcast to fp32 master weights"; DeepSpeed's
        ZeRO-3 keeps fp32 masters too). QLoRA is left alone there (a ``Params4bit`` model)."""
        return self.sharding in ("fsdp", "zero3") and self.precision != "fp32" and self.method != "qlora"

    @property
    def adapters_compute_fp32(self) -> bool:
        """fp32 adapters compute in fp32 (peft casts each input to their dtype), except under FSDP's
        mixed precision, which gathers every parameter of a unit in 16 bits, the adapters too (torch
        ``MixedPrecisionPolicy.param_dtype``, "the dtype for forward/backward computation")."""
        fsdp_mixed = self.sharding == "fsdp" and self.num_gpus > 1 and self.mixed
        return self.adapter_dtype == "fp32" and not fsdp_mixed

    @property
    def checkpointing(self) -> str:
        """``off``, ``on``, or ``offloaded`` (on, the checkpoints in host RAM): how plans say it."""
        if not self.grad_checkpointing:
            return "off"
        return "offloaded" if self.offload_activations else "on"

    @property
    def is_peft(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def adapts_linears(self) -> bool:
        """The adapter sits on the model's linear layers (LoRA, AdaLoRA, IA3), not on its input."""
        return self.is_peft and self.peft in ("lora", "adalora", "ia3")

    @property
    def low_rank(self) -> bool:
        """LoRA-shaped adapters (A and B matrices): LoRA, DoRA, AdaLoRA."""
        return self.is_peft and self.peft in ("lora", "adalora")

    @property
    def adapter_rank(self) -> int:
        """The rank each low-rank adapter is built with: AdaLoRA starts above its target."""
        if self.peft == "adalora":
            return self.adalora_init_r or math.ceil(1.5 * self.lora_r)
        return self.lora_r

    @property
    def adapter_name(self) -> str:
        """``LoRA``, ``DoRA``, ``AdaLoRA``, ``IA3``, ``prompt tuning``, ``prefix tuning``; empty for full."""
        return "" if not self.is_peft else "DoRA" if self.use_dora else PEFT_NAMES[self.peft]

    @property
    def adapter_label(self) -> str:
        """The adapter as plans name it: ``DoRA r=16``, ``AdaLoRA r=24->16``, ``IA3``,
        ``prompt tuning 20 tokens``; empty for full fine-tuning."""
        if not self.is_peft:
            return ""
        name = self.adapter_name
        if self.peft in ("prompt", "prefix"):
            return f"{name} {self.virtual_tokens} tokens"
        if self.peft == "ia3":
            return name
        if self.peft == "adalora":
            return f"{name} r={self.adapter_rank}->{self.lora_r}"
        return f"{name} r={self.lora_r}"

    @property
    def model_seq_len(self) -> int:
        """Positions per sample the model runs: prompt tuning prepends its virtual tokens."""
        return self.seq_len + (self.virtual_tokens if self.is_peft and self.peft == "prompt" else 0)

    @property
    def kv_len(self) -> int:
        """Keys each query attends over: prefix tuning adds its virtual tokens to every layer's."""
        return self.model_seq_len + (self.virtual_tokens if self.is_peft and self.peft == "prefix" else 0)

    @property
    def model_tokens(self) -> int:
        return self.batch_size * self.model_seq_len

    @property
    def mixed(self) -> bool:
        return self.precision.endswith("-mixed")

    @property
    def weight_bytes(self) -> int:
        """Bytes per stored 16/32-bit weight."""
        return 4 if self.precision in ("fp32", "bf16-mixed", "fp16-mixed") else 2

    @property
    def compute_bytes(self) -> int:
        """Bytes per activation element: 16-bit unless the run is pure fp32."""
        return 4 if self.precision == "fp32" else 2

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


def at_micro_batch(setup: TrainSetup, batch: int) -> TrainSetup:
    """``setup`` at micro-batch ``batch`` with the same global batch (micro-batch x accumulation):
    gradient accumulation makes up the difference, except under the optimizer in backward, which
    steps every micro-batch."""
    global_batch = setup.batch_size * setup.gradient_accumulation_steps
    steps = 1 if setup.optimizer_in_backward else max(1, global_batch // batch)
    return replace(setup, batch_size=batch, gradient_accumulation_steps=steps)
