"""What the Try page predicts: the memory of the generate session trainer/generate.py opens on a
run (its base as the session loads it, 4-bit when the run trained QLoRA, with the run's adapter),
on a peft adapter folder, or on a model folder (a merged export), from planner/inference.py.

The session loads in fp32 on the CPU and in 16 bits on a GPU; peft loads an adapter in fp32, and
a run's ``modules_to_save`` as a trained copy in the base's dtype (``adapter_params`` counts the
LoRA matrices and those copies, which is what the estimator counts as trainable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from planner.catalog import ModelSpec, adapter_base, resolve_model
from planner.catalog.safetensors_header import read_header
from planner.errors import PlannerError
from planner.inference import InferenceEstimate, inference_memory
from planner.memory import estimate
from planner.units import GiB, MiB
from trainer.config import ConfigError, TrainConfig, setup_of
from trainer.rundir import is_run_dir


@dataclass(frozen=True)
class TryPrediction:
    weights: int
    """Every stored weight: the base, its quantization state, the adapters."""
    peak: int | None
    """Peak allocated while answering the measured shape; None before any answer was measured."""
    estimate: InferenceEstimate
    text: str


def _base_and_adapter(source: Path, dtype_bytes: int) -> tuple[ModelSpec, str | None, bool, int, int]:
    """(base model, quant, double quant, adapter parameters, virtual tokens) of a run folder, an
    adapter folder or a model folder (a merged export: no adapter)."""
    if (source / "adapter_config.json").is_file():
        base = adapter_base(source)
        if not base:
            raise PlannerError(f"{source} names no base model")
        weights = source / "adapter_model.safetensors"
        params = sum(t.numel for t in read_header(weights)) if weights.is_file() else 0
        config = json.loads((source / "adapter_config.json").read_text())
        virtual = int(config.get("num_virtual_tokens") or 0)  # prompt and prefix tuning only
        return resolve_model(base), None, True, params, virtual
    if not is_run_dir(source):
        return resolve_model(str(source)), None, True, 0, 0
    cfg = TrainConfig.load(source / "config.json")
    spec = resolve_model(cfg.model)
    if cfg.method == "full":
        return spec, None, True, 0, 0
    trainable = estimate(spec, setup_of(cfg, "fp32" if dtype_bytes == 4 else "bf16")).params_trainable
    virtual = cfg.virtual_tokens if cfg.peft in ("prompt", "prefix") else 0
    return spec, cfg.quant if cfg.method == "qlora" else None, cfg.double_quant, trainable, virtual


def predicted_bytes(source: Path, device: str, shape: tuple[int, int] | None) -> TryPrediction | None:
    """The prediction for ``source`` on ``device`` (``cpu`` or ``cuda``), for an answer of
    ``shape`` = (prompt tokens, new tokens); None when it cannot be made (an unknown base)."""
    dtype_bytes = 4 if device == "cpu" else 2
    prompt, new = shape or (1, 1)
    try:
        spec, quant, double_quant, adapter_params, virtual = _base_and_adapter(source, dtype_bytes)
        est = inference_memory(spec, quant=quant, dtype_bytes=dtype_bytes, prompt_tokens=prompt,
                               new_tokens=new, adapter_params=adapter_params, double_quant=double_quant,
                               device="cpu" if device == "cpu" else "cuda", virtual_tokens=virtual)
    except (PlannerError, ConfigError, OSError, ValueError):  # (a bad adapter_config.json is a ValueError)
        return None
    weights = est.weights + est.quant_state + est.adapters
    peak = est.peak_allocated_bytes if shape else None
    text = f"Predicted: weights {_fmt(weights)}"
    if shape:
        text += (f", {_fmt(est.peak_allocated_bytes)} at the peak for {prompt} + {new} tokens "
                 f"(KV cache {_fmt(est.kv_cache)})")
    return TryPrediction(weights, peak, est, text + ".")


def _fmt(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"
