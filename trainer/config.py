"""``TrainConfig``: everything a run needs, validated at construction, JSON/YAML round trip.

Field names follow Hugging Face (``TrainingArguments``, ``LoraConfig``, ``BitsAndBytesConfig``)
and the planner's options, so that a plan and the run it launches read the same.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# The planner plans exactly what the trainer can run: one list of choices for both.
from planner.errors import shown
from planner.loss import LOSSES
from planner.options import ATTENTIONS, BOUNDS, METHODS, OPTIMIZERS, PEFTS, QUANTS, Bound, TrainSetup
from planner.options import PRECISIONS as _PLANNED_PRECISIONS

PRECISIONS = ("auto",) + _PLANNED_PRECISIONS
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text")
DEVICES = ("auto", "cuda", "cpu")
SHARDINGS = ("ddp", "fsdp")


class ConfigError(ValueError):
    """A bad config value: one line naming the field and how to fix it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        """The TrainConfig field at fault ("" when the whole config is): the app marks its widget."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field has a default except the model and the dataset."""

    model: str
    """Local model folder, or a Hugging Face Hub id (used only if cached locally or online)."""
    dataset: str
    """Training data file: .jsonl, .json, .csv or .parquet."""
    output_dir: str = "runs/run"
    """The run directory: config, metrics.jsonl, checkpoints, the final adapter, run.json."""
    method: str = "qlora"
    quant: str = "nf4"
    """QLoRA base format (bitsandbytes): nf4, fp4, or int8 (LLM.int8)."""
    double_quant: bool = True
    kbit_upcast: bool = True
    """QLoRA: keep what ``prepare_model_for_kbit_training`` does, every non-quantized weight
    (embeddings, LM head, norms) in fp32. False casts the frozen ones back to the load dtype, as
    the QLoRA paper's own script did: less memory, a 16-bit LM head."""
    precision: str = "auto"
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU."""
    adapter_dtype: str = "fp32"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("all-linear",)
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool = False
    """LoRA/QLoRA: DoRA (peft ``use_dora``), a trained magnitude per output row of each adapted layer."""
    peft: str = "lora"
    """LoRA/QLoRA: the adapter trained (lora, adalora, ia3, prompt, prefix; planner.options.PEFTS)."""
    adalora_init_r: int = 0
    """AdaLoRA: starting rank, pruned to ``lora_r`` on average over the run (0: 1.5 x lora_r)."""
    virtual_tokens: int = 20
    """Prompt and prefix tuning: trained virtual tokens."""
    optimizer: str = "adamw_torch"
    optimizer_in_backward: bool = False
    """Full fine-tuning: each parameter stepped, and its gradient freed, as soon as backward has it
    (planner/simulate/in_backward.py): no gradient accumulation, no clipping (max_grad_norm 0)."""
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 1
    """Micro-batch per device (``per_device_train_batch_size``)."""
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    """> 0 overrides ``epochs`` (as in TrainingArguments)."""
    max_seq_len: int = 2048
    grad_checkpointing: bool = True
    offload_activations: bool = False
    """With grad_checkpointing: each layer's checkpointed input waits in pinned host RAM, not on the
    GPU (transformers' own ``offload``, torch's ``save_on_cpu``): long sequences fit, each step
    copies those inputs out and back."""
    attention: str = "sdpa"
    loss: str = "standard"
    """``standard`` (transformers' loss over the whole logits), ``chunked`` (LM head and
    cross-entropy chunk by chunk: the logits never exist whole) or ``chunked-output`` (torchtune's:
    8 chunks, their fp32 log-probabilities kept for backward); planner/loss.py."""
    loss_chunk_mib: int = 0
    """``chunked``: chunks by their fp32 logits' size (Unsloth: 4096); 0: planner/loss.py's rule."""
    data_format: str = "auto"
    assistant_only_loss: bool = True
    """Train only on assistant tokens (chat formats); the prompt is masked out of the loss."""
    packing: bool = False
    val_split: float = 0.0
    """Fraction of examples held out for eval loss (0 = no evaluation)."""
    seed: int = 42
    logging_steps: int = 1
    eval_steps: int = 0
    """0 = evaluate once per epoch when ``val_split`` > 0."""
    save_steps: int = 0
    """0 = checkpoint only on request, on stop and at the end."""
    save_total_limit: int = 2
    device: str = "auto"
    num_processes: int = 1
    """Processes to train with, one per GPU: torchrun starts them (gloo on the CPU, NCCL on GPUs)."""
    sharding: str = "ddp"
    """With several processes: ``ddp`` keeps a whole replica per process; ``fsdp`` shards
    parameters, gradients and optimizer state across them."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust its author."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Free-form notes and future fields; the trainer itself reads none of them (test hooks
    plugged in through FINETUNE_TRAINER_PLUGIN read theirs here)."""

    def __post_init__(self) -> None:
        for name, allowed in (("method", METHODS), ("quant", QUANTS), ("precision", PRECISIONS),
                              ("optimizer", OPTIMIZERS), ("lr_scheduler_type", SCHEDULERS),
                              ("attention", ATTENTIONS), ("data_format", FORMATS), ("device", DEVICES),
                              ("adapter_dtype", ("fp32", "bf16")), ("sharding", SHARDINGS), ("loss", LOSSES),
                              ("peft", PEFTS)):
            value = getattr(self, name)
            if value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{name}: {shown(value)} is not one of {', '.join(allowed)}{hint}", name)
        for name, what in (("model", "a local model folder or a Hub id"),
                           ("dataset", "a .jsonl, .json, .csv or .parquet file"),
                           ("output_dir", "a new or empty folder for the run")):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"{name}: expected a string ({what}), got {_jtype(value)}", name)
            if not value.strip():
                raise ConfigError(f"{name}: empty; give {what}", name)
            if "\0" in value:
                raise ConfigError(f"{name}: contains a NUL character; give {what}", name)
        for name, bound in _BOUNDS.items():
            value = getattr(self, name)
            if not bound.contains(value):
                raise ConfigError(f"{name}: expected {bound.describe(with_why=False)}, got {shown(value)}", name)
        if self.max_steps == 0:
            raise ConfigError("max_steps: 0 trains nothing; use -1 (train for `epochs`) or a positive count",
                              "max_steps")
        for name in ("lora_targets", "modules_to_save"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, tuple(v.strip() for v in value.split(",") if v.strip()))
            elif not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name}: expected a list of module names, got {value!r}", name)
            else:
                object.__setattr__(self, name, tuple(value))
        if not self.lora_targets:
            raise ConfigError("lora_targets: empty; use all-linear or names such as q_proj,v_proj", "lora_targets")
        for name in ("double_quant", "kbit_upcast", "grad_checkpointing", "offload_activations",
                     "optimizer_in_backward", "assistant_only_loss", "packing", "trust_remote_code", "use_dora"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}", name)
        if self.offload_activations and not self.grad_checkpointing:
            raise ConfigError("offload_activations: moves the checkpointed layer inputs to host RAM; it needs "
                              "grad_checkpointing true", "offload_activations")
        if self.use_dora and self.method == "full":
            raise ConfigError("use_dora: DoRA adapts LoRA; it needs method lora or qlora", "use_dora")
        self._check_peft()
        if self.optimizer_in_backward:
            self._check_in_backward()
        if self.loss != "standard" and self.num_processes > 1:
            # the chunked loss calls the decoder beneath the DDP/FSDP wrapper, whose forward
            # prepares the gradient reduction (planner/simulate/chunked_loss.py)
            raise ConfigError(CHUNKED_ONE_PROCESS, "loss")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra: expected a mapping, got {_jtype(self.extra)}", "extra")

    def _check_peft(self) -> None:
        if self.peft == "lora":
            return
        for wrong, name, why in (
                (self.method == "full", "peft", "trains an adapter: it needs method lora or qlora"),
                (self.use_dora, "use_dora", f"DoRA is a kind of LoRA: it does not combine with peft {self.peft}"),
                (self.peft == "prefix" and self.grad_checkpointing, "grad_checkpointing",
                 "prefix tuning needs grad_checkpointing false: transformers 5 drops the cache, and with it the "
                 "prefix, inside a checkpointed layer"),
                (self.peft in ("prompt", "prefix") and bool(self.modules_to_save), "modules_to_save",
                 f"peft {self.peft} adds virtual tokens and trains no layer"),
                (self.peft == "adalora" and 0 < self.adalora_init_r < self.lora_r, "adalora_init_r",
                 f"below the rank AdaLoRA prunes to (lora_r {self.lora_r})")):
            if wrong:
                raise ConfigError(f"{name}: {why}", name)

    def _check_in_backward(self) -> None:
        for wrong, why in ((self.method != "full", "applies to method full (adapters' gradients are small)"),
                           (self.gradient_accumulation_steps != 1, "steps in every backward: set "
                            "gradient_accumulation_steps 1"),
                           (self.max_grad_norm != 0, "has no moment with every gradient to clip by their norm: "
                            "set max_grad_norm 0"),
                           (self.num_processes != 1, "runs in one process (each gradient is used before any "
                            "all-reduce)")):
            if wrong:
                raise ConfigError(f"optimizer_in_backward: {why}", "optimizer_in_backward")

    # ---- what a checkpoint depends on ------------------------------------------------------

    def basis(self) -> dict[str, Any]:
        """The fields a checkpoint of this run depends on: all but :data:`RESUME_SAFE`. A resume
        whose config.json differs here would continue a run that no longer matches its weights,
        optimizer state, schedule or data order."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_SAFE}

    def length(self) -> dict[str, Any]:
        """How long the run was asked to train: raising it is how a finished run trains further."""
        return {"max_steps": self.max_steps, "epochs": self.epochs}

    # ---- round trip -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        out["modules_to_save"] = list(self.modules_to_save)
        if not self.extra:
            out.pop("extra")
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError("a run config must be a mapping of field names to values")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"unknown field '{key}'{hint}", str(key))
        for required in ("model", "dataset"):
            if required not in data:
                raise ConfigError(f"{required}: missing; every run config names its {required}", required)
        try:
            return cls(**data)
        except TypeError as exc:  # a value of the wrong type reached a comparison
            raise ConfigError(f"a field has the wrong type: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read ({exc})") from None
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError: both are syntax errors
            raise ConfigError(f"{p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                              f"({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data)

    def dump(self, path: str | Path) -> None:
        from planner.atomic import atomic_write_text

        p = Path(path)
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            atomic_write_text(p, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(p, self.to_json())


# ---- a plan and a run: the one mapping between planner.options.TrainSetup and TrainConfig ----------

SHARDING_OF_PLAN = {"none": "ddp", "ddp": "ddp", "fsdp": "fsdp", "zero3": "fsdp"}
"""How the trainer runs a planned sharding. ZeRO-3 and FSDP's full shard keep the same state per
GPU (parameters, gradients and optimizer state all sharded), so a zero3 plan runs as FSDP; ZeRO-2
(sharded optimizer and gradients, whole parameters) has no counterpart in the trainer."""

SETUP_FIELDS = ("method", "quant", "double_quant", "kbit_upcast", "precision", "adapter_dtype", "optimizer",
                "optimizer_in_backward", "gradient_accumulation_steps", "batch_size", "max_seq_len",
                "grad_checkpointing", "offload_activations", "attention", "loss", "loss_chunk_mib", "lora_r",
                "lora_alpha", "lora_dropout", "lora_targets", "modules_to_save", "use_dora", "peft", "adalora_init_r",
                "virtual_tokens", "num_processes", "sharding", "packing")
"""The TrainConfig fields a TrainSetup decides (the rest, data and schedule, no plan says; but a
plan with the optimizer in backward also turns gradient clipping off, which that needs)."""


CHUNKED_ONE_PROCESS = ("loss: chunked and chunked-output run in one process only; use loss standard with "
                       "num_processes > 1")


def why_not_trainable(setup: TrainSetup) -> str | None:
    """Why this trainer cannot run ``setup`` as planned (one line), or None when it can."""
    if setup.loss != "standard" and setup.num_gpus > 1:
        return f"the trainer's {CHUNKED_ONE_PROCESS}"
    if setup.offload != "none":
        return f"the trainer has no CPU offload (planned: offload {setup.offload}); plan without offload to train here"
    if setup.sharding not in SHARDING_OF_PLAN:
        return (f"the trainer shards with {' or '.join(SHARDINGS)} only (planned: {setup.sharding}); "
                "plan with fsdp or ddp to train here")
    if setup.kernels != "eager":
        return (f"the trainer runs PyTorch's and peft's kernels eagerly (planned: {setup.kernels}); "
                "plan with eager to train")
    if setup.method == "qlora" and setup.quant == "2bit":
        return "the trainer quantizes with bitsandbytes (nf4, fp4, int8); 2-bit is an estimate only"
    return None


def fields_of(setup: TrainSetup) -> dict[str, Any]:
    """The TrainConfig fields (:data:`SETUP_FIELDS`) that run ``setup``; raises ConfigError when
    the trainer cannot (:func:`why_not_trainable`)."""
    problem = why_not_trainable(setup)
    if problem:
        raise ConfigError(problem)
    s = setup
    return {
        "method": s.method, "quant": s.quant or "nf4", "double_quant": s.double_quant,
        "kbit_upcast": s.kbit_prepare, "precision": s.precision,
        "adapter_dtype": s.adapter_dtype, "optimizer": s.optimizer, "optimizer_in_backward": s.optimizer_in_backward,
        **({"max_grad_norm": 0.0} if s.optimizer_in_backward else {}), "batch_size": s.batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "max_seq_len": s.seq_len, "grad_checkpointing": s.grad_checkpointing,
        "offload_activations": s.offload_activations, "attention": s.attention, "loss": s.loss,
        "loss_chunk_mib": s.loss_chunk_mib,
        "lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": s.lora_dropout,
        "lora_targets": list(s.lora_targets), "modules_to_save": list(s.modules_to_save), "use_dora": s.use_dora,
        "peft": s.peft, "adalora_init_r": s.adalora_init_r, "virtual_tokens": s.virtual_tokens,
        "num_processes": s.num_gpus, "sharding": SHARDING_OF_PLAN[s.sharding], "packing": s.packing,
    }


def merged_precision(cfg: TrainConfig) -> str:
    """The dtype ``export --merge`` writes: bf16 for a bf16 run, fp32 otherwise (fp16 would round
    what the adapter learned; ``auto`` ran fp32 on the CPU)."""
    return "bf16" if cfg.precision in ("bf16", "bf16-mixed") else "fp32"


def setup_of(cfg: TrainConfig, precision: str) -> TrainSetup:
    """What the planner estimates for ``cfg`` run at ``precision`` (``auto`` resolved by the
    trainer: it depends on the device)."""
    return TrainSetup(
        method=cfg.method, quant=cfg.quant if cfg.method == "qlora" else None, double_quant=cfg.double_quant,
        kbit_prepare=cfg.kbit_upcast,
        precision=precision, adapter_dtype=cfg.adapter_dtype, optimizer=cfg.optimizer,
        optimizer_in_backward=cfg.optimizer_in_backward, batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        seq_len=cfg.max_seq_len, grad_checkpointing=cfg.grad_checkpointing,
        offload_activations=cfg.offload_activations, attention=cfg.attention, loss=cfg.loss,
        loss_chunk_mib=cfg.loss_chunk_mib,
        lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets,
        modules_to_save=cfg.modules_to_save, use_dora=cfg.use_dora, num_gpus=cfg.num_processes,
        peft=cfg.peft, adalora_init_r=cfg.adalora_init_r,
        virtual_tokens=cfg.virtual_tokens,
        sharding="none" if cfg.num_processes == 1 else cfg.sharding, packing=cfg.packing,
    )


RESUME_SAFE = ("output_dir", "max_steps", "epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
               "device", "grad_checkpointing", "offload_activations", "attention", "loss", "loss_chunk_mib",
               "lora_dropout", "extra")
"""Fields a run's config.json may change before ``--resume``: none of them is stored in a
checkpoint or changes what it means (gradient checkpointing, activation offloading, the attention
kernel and the chunked loss compute the same function; dropout has no state). Everything else is
refused, naming the fields."""

_STEPS = Bound(0, 2**31 - 1)
_BOUNDS = {
    # shared with the planner, which plans exactly what the trainer runs
    "lora_r": BOUNDS["lora_r"], "lora_alpha": BOUNDS["lora_alpha"], "batch_size": BOUNDS["batch_size"],
    "max_seq_len": BOUNDS["seq_len"], "num_processes": BOUNDS["num_gpus"], "epochs": BOUNDS["epochs"],
    "loss_chunk_mib": BOUNDS["loss_chunk_mib"], "adalora_init_r": BOUNDS["adalora_init_r"],
    "virtual_tokens": BOUNDS["virtual_tokens"],
    "gradient_accumulation_steps": Bound(1, 2**20), "logging_steps": Bound(1, 2**31 - 1),
    "save_total_limit": Bound(1, 2**20), "warmup_steps": _STEPS, "eval_steps": _STEPS, "save_steps": _STEPS,
    "seed": Bound(0, 2**32 - 1), "max_steps": Bound(-1, 2**31 - 1),
    "learning_rate": Bound(0.0, 1e3, whole=False, low_open=True), "lora_dropout": Bound(0.0, 0.9, whole=False),
    "val_split": Bound(0.0, 0.5, whole=False), "weight_decay": Bound(0.0, 1e6, whole=False),
    "max_grad_norm": Bound(0.0, 1e12, whole=False),
}
"""Every number a run config holds, with bounds far beyond any real run: a typo of 10^30 is one
clear line, not an allocation crash deep in a library."""


def _jtype(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
