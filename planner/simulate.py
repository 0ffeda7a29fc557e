"""Precise mode: run one real training step of the real model and count the bytes it allocates.

The transformers model is built from its config on the ``meta`` device (shapes and dtypes, no
storage), wrapped with the real peft LoRA, and a real forward, backward and optimizer step run on
meta tensors under a ``TorchDispatchMode`` that adds up every live storage. Nothing is allocated
in proportion to the model and no GPU is needed. One and two decoder layers are simulated and
the rest extrapolated: the layers are identical, so memory is affine in their number.

The only planner module that imports torch (lazily): the estimator stays torch-free.

Not simulated yet (a clear error, never a crash): QLoRA (bitsandbytes' packed layout) and MoE
(data-dependent routing); use the analytic estimate for those.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from planner.calibration import ALLOCATOR_SLACK, CUDA_CONTEXT
from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.options import TrainSetup

PHASES = ("forward", "backward", "optimizer")


@dataclass(frozen=True)
class Simulation:
    model: str
    layers_simulated: tuple[int, ...]
    phase_peaks: dict[str, int]
    """Peak live bytes during each phase of the step, extrapolated to every layer."""
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    assumptions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "mode": "simulated", "layers_simulated": list(self.layers_simulated),
            "phase_peaks": dict(self.phase_peaks), "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes, "device_used_bytes": self.device_used_bytes,
            "assumptions": list(self.assumptions),
        }


def _counter_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map_only

    class LiveBytes(TorchDispatchMode):
        """Adds up the storages that exist, as the caching allocator would see them allocated."""

        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0

        def track(self, t: Any) -> None:
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live:
                return
            size = storage.nbytes()
            self.live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._release, key)

        def _release(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)

        def reset_peak(self) -> None:
            self.peak = self.current

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tree_map_only(torch.Tensor, self.track, out)
            return out

    return LiveBytes


def _dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _build(config: dict[str, Any], layers: int, setup: TrainSetup, device: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {**config, "num_hidden_layers": layers, "use_cache": False}
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise PlannerError("precise mode needs the model's config.json with a model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if k != "architectures"})
    except (ValueError, KeyError) as exc:
        raise PlannerError(f"cannot simulate: transformers does not know model_type '{model_type}' ({exc})") from None
    hf_config._attn_implementation = "eager" if setup.attention == "eager" else "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(_dtype(setup.precision))
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config)
    finally:
        torch.set_default_dtype(previous)
    if setup.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = "all-linear" if "all-linear" in setup.lora_targets else list(setup.lora_targets)
        model = get_peft_model(model, LoraConfig(r=setup.lora_r, lora_alpha=setup.lora_alpha,
                                                 lora_dropout=setup.lora_dropout, target_modules=targets,
                                                 modules_to_save=list(setup.modules_to_save) or None),
                               autocast_adapter_dtype=setup.adapter_dtype == "fp32")
    if setup.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if setup.method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model


def _fused_sdpa(original: Any) -> Any:
    """On meta tensors SDPA decomposes into the math path (an s x s score matrix); GPUs and the
    CPU run a fused kernel that keeps O(s). Route meta calls to the fused CPU kernel, whose meta
    registration allocates exactly what the real kernel does."""
    import torch

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "meta" or attn_mask is not None:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        # the fused kernel takes grouped K/V as they are (no repeated copies), like the real one
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, scale=scale)[0]

    return sdpa


def run_step(config: dict[str, Any], layers: int, setup: TrainSetup, device: str = "meta") -> dict[str, int]:
    """Peak live bytes per phase of one step of a ``layers``-layer copy of the model.

    ``device="cpu"`` runs the same step on real tensors: the ground truth the meta run is
    checked against in the tests.
    """
    import torch

    from unittest import mock

    counter = _counter_class()()
    peaks: dict[str, int] = {}
    # transformers looks for packed sequences by reading position ids (data the meta device does
    # not have); the simulated batch is unpacked, which is what that check would find.
    sdpa = _fused_sdpa(torch.nn.functional.scaled_dot_product_attention)
    with mock.patch("transformers.masking_utils.find_packed_sequence_indices", lambda *a, **k: None), \
            mock.patch("torch.nn.functional.scaled_dot_product_attention", sdpa), counter:
        model = _build(config, layers, setup, device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=setup.optimizer == "adamw_torch",
                                      fused=False)
        ids = torch.randint(0, int(config.get("vocab_size", 2)), (setup.batch_size, setup.seq_len), device=device)
        for step in range(2):  # the second step has optimizer state and gradients from the first
            counter.reset_peak()
            loss = model(input_ids=ids, labels=ids).loss
            peaks["forward"] = counter.peak
            counter.reset_peak()
            loss.backward()
            del loss
            peaks["backward"] = counter.peak
            counter.reset_peak()
            optimizer.step()
            peaks["optimizer"] = counter.peak
            if step == 0:
                optimizer.zero_grad(set_to_none=False)  # gradient accumulation keeps them allocated
    return peaks


def simulate(model: ModelSpec, setup: TrainSetup) -> Simulation:
    if not model.config:
        raise PlannerError("precise mode needs the model's config.json; this model has none")
    if setup.method == "qlora":
        raise PlannerError("cannot simulate QLoRA yet (bitsandbytes' packed layout is not modelled); "
                           "use `python -m planner estimate` for it")
    if model.arch.is_moe:
        raise PlannerError("cannot simulate MoE yet (routing shapes depend on the data); "
                           "use `python -m planner estimate` for it")
    if setup.num_gpus > 1:
        raise PlannerError("precise mode simulates one GPU; use `estimate` for --num-gpus > 1")
    window = model.config.get("sliding_window")
    if isinstance(window, int) and setup.seq_len > window and setup.attention != "eager":
        # an explicit band mask makes GPUs pick the memory-efficient kernel, which the meta device
        # lacks: the meta step would materialise the full score matrix instead
        raise PlannerError(f"cannot simulate sliding-window attention beyond its window ({window} tokens) yet; "
                           "use `python -m planner estimate` for it")
    if setup.optimizer not in ("adamw_torch", "adamw_torch_fused"):
        raise PlannerError(f"precise mode simulates torch AdamW only; use `estimate` for {setup.optimizer}")
    if setup.mixed:
        raise PlannerError("precise mode simulates pure bf16/fp16/fp32 runs; use `estimate` for *-mixed")
    try:
        one = run_step(model.config, 1, setup)
        two = run_step(model.config, 2, setup)
    except PlannerError:
        raise
    except Exception as exc:  # an op the meta device lacks, an unknown layer type: say so, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlannerError(f"cannot simulate this model: {first[:200]}") from None
    layers = model.arch.num_layers
    phases = {p: one[p] + (layers - 1) * (two[p] - one[p]) for p in PHASES}
    peak = max(phases.values())
    # the estimator's allocator model: slack over what the step adds on top of the weights
    transient = max(peak - min(phases.values()), 0)
    reserved = peak + int(ALLOCATOR_SLACK * transient)
    notes = (f"simulated 1 and 2 layers on the meta device and extrapolated to {layers} (identical layers)",
             "torch AdamW; CUDA context and allocator slack as in the analytic estimate")
    return Simulation(model.name, (1, 2), phases, peak, reserved, reserved + CUDA_CONTEXT, notes)
