"""Load the tokenizer and the model for a run: full, LoRA and QLoRA differ only by parameters.

Safetensors only, ``trust_remote_code`` only when the config says so, and a Hub id is used
only when it is cached locally or the Hub answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from trainer.config import TrainConfig, setup_of


class ModelError(RuntimeError):
    """The model or tokenizer cannot be loaded: one line saying why and what to do."""


@dataclass(frozen=True)
class Runtime:
    """Where and in which dtype the run computes."""

    device: str
    """``cuda`` or ``cpu``."""
    precision: str
    """The resolved precision (``auto`` replaced)."""


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    import torch

    has_cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_cuda:
        raise ModelError("device: cuda was requested but no CUDA GPU is visible; use device auto or cpu")
    device = "cuda" if has_cuda and cfg.device != "cpu" else "cpu"
    precision = cfg.precision
    if precision == "auto":
        if device == "cpu":
            precision = "fp32"  # CPU bf16 matmuls are slow and fp32 keeps runs reproducible
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Runtime(device, precision)


def weight_dtype(precision: str) -> Any:
    """The dtype weights are loaded in: 16-bit for pure 16-bit runs, fp32 master weights otherwise."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def compute_dtype(precision: str) -> Any:
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("fp16"):
        return torch.float16
    return torch.float32


def source(cfg: TrainConfig) -> tuple[str, bool]:
    """(name to load from, whether it is a local folder)."""
    path = Path(cfg.model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; point model at a Hugging Face model folder")
        if not any(path.glob("*.safetensors")):
            has_bin = any(path.glob("*.bin")) or any(path.glob("*.pt"))
            why = " (only pickle .bin/.pt weights, which are never loaded)" if has_bin else ""
            raise ModelError(f"{path} has no *.safetensors weights{why}; convert the checkpoint to safetensors")
        return str(path), True
    if path.exists() or cfg.model.startswith((".", "/", "~")):
        raise ModelError(f"{cfg.model}: not a model folder")
    return cfg.model, False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


@contextlib.contextmanager
def reading(name: str, local: bool, problem: str) -> Iterator[None]:
    """A library reading the model failed on what it read, not on memory: a truncated weights
    file, a config value of the wrong type, a missing tokenizer file each raise their own
    exception type, and the user needs one line either way (``problem``, with ``{why}`` for the
    library's first line; out-of-memory stays an OOM, a Hub id that cannot be fetched says so)."""
    from trainer.faults import is_oom

    try:
        yield
    except Exception as exc:
        if is_oom(exc):
            raise
        if not local and isinstance(exc, OSError):
            raise _hub_error(name, exc) from None
        raise ModelError(problem.replace("{why}", _first_line(exc))) from None


def _hub_error(name: str, exc: Exception) -> ModelError:
    return ModelError(f"{name}: not found locally and the Hub is unreachable or has no such model "
                      f"({type(exc).__name__}); download it first or give a local folder")


def load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    name, local = source(cfg)
    with reading(name, local, f"{name}: cannot load the tokenizer ({{why}}); the folder needs the tokenizer "
                                "files saved with the model (tokenizer.json or tokenizer.model)"):
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    if tok is None or not callable(tok):
        raise ModelError(f"{name}: no tokenizer found; save the tokenizer into the model folder")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding positions are masked out of the loss anyway
    return tok


def quantization_config(cfg: TrainConfig, precision: str) -> Any:
    from transformers import BitsAndBytesConfig

    if cfg.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    sharded = cfg.num_processes > 1 and cfg.sharding == "fsdp"
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(precision),
        # bitsandbytes' FSDP recipe: packed weights stored in the dtype of the other weights, so
        # FSDP can flatten and shard them together (uint8 storage cannot be)
        **({"bnb_4bit_quant_storage": compute_dtype(precision)} if sharded else {}),
    )


def _config(cfg: TrainConfig) -> Any:
    """The model's transformers config (its ``config.json``)."""
    from transformers import AutoConfig

    name, local = source(cfg)
    with reading(name, local, f"{name}: cannot read its config: {{why}}"):
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)


def per_expert(cfg: TrainConfig) -> str | None:
    """The model type when this run rebuilds MoE experts per expert (LoRA and QLoRA on a model
    whose experts transformers fuses; see planner/simulate/moe_layout.py), else None."""
    from planner.simulate.moe_layout import needs_split

    if cfg.method == "full" or cfg.trust_remote_code:
        return None
    model_type = str(_config(cfg).model_type)
    try:
        return model_type if needs_split(model_type) else None
    except PlannerError as exc:
        raise ModelError(str(exc)) from None


def model_layout(cfg: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    """Held for as long as the run loads, trains, resumes and saves its model."""
    from planner.simulate.moe_layout import per_expert_loading

    model_type = per_expert(cfg)
    return per_expert_loading(model_type) if model_type else contextlib.nullcontext()


def model_class(cfg: TrainConfig) -> Any:
    """``AutoModelForCausalLM``, or the model's own class building its experts per expert."""
    from transformers import AutoModelForCausalLM

    if not per_expert(cfg):
        return AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from planner.simulate.moe_layout import per_expert_class

    return per_expert_class(MODEL_FOR_CAUSAL_LM_MAPPING[type(_config(cfg))])


def load_model(cfg: TrainConfig, rt: Runtime, total_steps: int = 1000) -> Any:
    """The model ready for Trainer: quantized and prepared (QLoRA), wrapped with its adapter (LoRA,
    QLoRA), for a run of ``total_steps`` optimizer steps (AdaLoRA's rank schedule).

    Call it inside ``model_layout(cfg)``."""
    name, local = source(cfg)
    kwargs: dict[str, Any] = dict(
        dtype=weight_dtype(rt.precision),
        attn_implementation=cfg.attention,
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
    )
    if cfg.method == "qlora":
        kwargs["quantization_config"] = quantization_config(cfg, rt.precision)
        kwargs["device_map"] = {"": 0} if rt.device == "cuda" else {"": "cpu"}
    with reading(name, local, f"{name}: cannot load the model: {{why}}"):
        model = model_class(cfg).from_pretrained(name, **kwargs)
    if cfg.method == "full":
        return model
    return _with_adapter(cfg, model, rt.precision, total_steps)


def param_counts(model: Any) -> tuple[int, int]:
    """(total, trainable) parameters, counted as the planner counts them: the model's own weights
    by their logical shape, and what the optimizer updates. Full, LoRA and QLoRA runs of one model
    report one total, and the planner's.

    LoRA adapters and peft's trained copies of ``modules_to_save`` are no part of the total (they
    are in the trainable count); a 4-bit weight counts its values, not its packed bytes."""
    from peft import PeftModel

    # a tuner's own prefix (lora_, ia3_...); prompt learning keeps its encoder beside the base
    tuner = getattr(model.base_model, "prefix", "prompt_encoder") if isinstance(model, PeftModel) else None
    added = ("modules_to_save", "prompt_encoder", tuner) if tuner else ()
    total = trainable = 0
    for name, param in model.named_parameters():
        count = logical_numel(param)
        trainable += count if param.requires_grad else 0
        if not any(part.startswith(added) for part in name.split(".")):  # startswith(()) is False
            total += count
    return total, trainable


def logical_numel(param: Any) -> int:
    """How many values a parameter holds. bitsandbytes' ``Params4bit`` stores two 4-bit values per
    uint8 element (more in a wider ``quant_storage``); its ``quant_state`` keeps the real shape."""
    import math

    shape = getattr(getattr(param, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else int(param.numel())


def _with_adapter(cfg: TrainConfig, model: Any, precision: str, total_steps: int) -> Any:
    from peft import get_peft_model, prepare_model_for_kbit_training

    from planner.simulate.adapters import freeze_rank_counts, peft_config

    if cfg.method == "qlora":
        # freezes the base, casts the non-quantized weights to fp32, enables input grads
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.grad_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
        if not cfg.kbit_upcast:
            _back_to(model, weight_dtype(precision))
    _check_modules_to_save(cfg, model)
    try:
        model = get_peft_model(model, peft_config(setup_of(cfg, precision), total_steps),
                               autocast_adapter_dtype=cfg.adapter_dtype == "fp32")
    except (ValueError, PlannerError) as exc:  # peft: "Target modules {...} not found in the base model"
        raise ModelError(f"lora_targets: {str(exc).splitlines()[0]}") from None
    freeze_rank_counts(model)
    return model


def _check_modules_to_save(cfg: TrainConfig, model: Any) -> None:
    """peft trains a copy of each module whose name ends with an entry, and silently does nothing
    for an entry that matches none: a typo would train the adapters alone without a word."""
    names = {name for name, _ in model.named_modules()}
    leaves = {name.rsplit(".", 1)[-1] for name in names}
    unknown = [m for m in cfg.modules_to_save if m not in leaves and m not in names]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(leaves), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ModelError(f"modules_to_save: no module named {unknown[0]!r} in this model{hint}")


def _back_to(model: Any, dtype: Any) -> None:
    """Undo prepare_model_for_kbit_training's fp32 upcast: every frozen floating weight (embeddings,
    LM head, norms; the quantized ones are not floating) back to the dtype it was loaded in, as the
    QLoRA paper's own script did (its embeddings and norms in bf16)."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype and not p.requires_grad:
            p.data = p.data.to(dtype)
