"""The knobs of a training run that decide its memory: the CLI's OPTIONS as a value.

Names and defaults follow Hugging Face (``TrainingArguments``, ``LoraConfig``,
``BitsAndBytesConfig``) so that a plan reads like the run it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.errors import PlannerError

METHODS = ("full", "lora", "qlora")
QUANTS = ("nf4", "fp4", "int8")
PRECISIONS = ("bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")
ADAPTER_DTYPES = ("fp32", "bf16")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
              "sgd", "adafactor")
ATTENTIONS = ("sdpa", "flash_attention_2", "eager")
SHARDINGS = ("none", "ddp", "fsdp", "zero2", "zero3")
OFFLOADS = ("none", "optimizer", "params")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PlannerError(f"--{name.replace('_', '-')} '{value}' is not one of: {', '.join(allowed)}")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlannerError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


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
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("all-linear",)
    modules_to_save: tuple[str, ...] = ()
    num_gpus: int = 1
    sharding: str = "none"
    offload: str = "none"
    kbit_prepare: bool = True
    """QLoRA runs ``prepare_model_for_kbit_training``, which casts every non-quantized weight
    (embeddings, LM head, norms) to fp32."""
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        if self.quant is not None:
            if self.method != "qlora":
                raise PlannerError(f"--quant {self.quant} only applies to --method qlora (this is a {self.method} run)")
            _choice("quant", self.quant, QUANTS + ("2bit",))
        elif self.method == "qlora":
            object.__setattr__(self, "quant", "nf4")
        _choice("precision", self.precision, PRECISIONS)
        _choice("adapter_dtype", self.adapter_dtype, ADAPTER_DTYPES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("sharding", self.sharding, SHARDINGS)
        _choice("offload", self.offload, OFFLOADS)
        for name in ("batch_size", "seq_len", "lora_r", "num_gpus"):
            _positive(name, getattr(self, name))
        if self.lora_alpha <= 0:
            raise PlannerError(f"--lora-alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise PlannerError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets or any(not t for t in self.lora_targets):
            raise PlannerError("--lora-targets needs module names such as q_proj,v_proj, or all-linear")
        if self.num_gpus > 1 and self.sharding == "none":
            object.__setattr__(self, "sharding", "ddp")
        if self.offload != "none" and self.sharding not in ("fsdp", "zero2", "zero3"):
            raise PlannerError(f"--offload {self.offload} needs --sharding fsdp, zero2 or zero3")
        if self.offload == "params" and self.sharding == "zero2":
            raise PlannerError("--offload params needs --sharding fsdp or zero3 (ZeRO-2 keeps whole parameters)")

    @property
    def fp32_unquantized(self) -> bool:
        """QLoRA weights bitsandbytes left alone end up fp32: prepare_model_for_kbit_training
        upcasts them, except under FSDP/ZeRO-3, whose flat parameters need one dtype (the
        FSDP-QLoRA recipe stores everything in the 16-bit quant_storage dtype instead)."""
        return self.method == "qlora" and self.kbit_prepare and self.sharding not in ("fsdp", "zero3")

    @property
    def is_peft(self) -> bool:
        return self.method in ("lora", "qlora")

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
