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

import contextlib
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


def _build(config: dict[str, Any], layers: int, setup: TrainSetup, device: str, recompute: Any = None) -> Any:
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
        kwargs: dict[str, Any] = {"use_reentrant": False}
        if recompute is not None:
            # the autograd engine recomputes meta layers on its own thread, where a torch-function
            # mode entered on this one is not active
            kwargs["context_fn"] = lambda: (contextlib.nullcontext(), recompute)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if setup.method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model


def _semantics_class() -> type:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves, tree_map_only

    from planner.autocast_policy import FP32, FP32_DTYPE, LOWER, PROMOTE

    def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        # the fused kernel takes grouped K/V as they are (no repeated copies), like the real one
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, scale=scale)[0]

    class MetaSemantics(TorchFunctionMode):
        """What a GPU step does that a meta-device step would not.

        - CUDA autocast's casts, per ``policy`` (None: no autocast), with its cache of 16-bit copies
          of fp32 weights, kept until the forward ends.
        - The fused SDPA kernel: on meta tensors SDPA decomposes into the math path (an s x s
          score matrix); GPUs and the CPU run a fused kernel that keeps O(s). The fused CPU
          kernel's meta registration allocates exactly what the real kernel does.
        """

        def __init__(self, policy: Any, dtype: Any) -> None:
            super().__init__()
            self.policy, self.dtype = policy, dtype
            self.cache: dict[int, tuple[Any, Any]] = {}
            self.caching = True

        def end_forward(self) -> None:
            # autocast clears its cache when the forward's context exits; checkpointed layers
            # recomputed during backward cast again, and their copies die with the layer
            self.cache.clear()
            self.caching = False

        def _cast(self, t: Any, to: Any) -> Any:
            if not t.is_floating_point() or t.dtype in (to, torch.float64):
                return t
            cacheable = (self.caching and to == self.dtype and t.dtype == torch.float32 and t.is_leaf
                         and t.requires_grad and not t._is_view())
            if not cacheable:
                return t.to(to)
            hit = self.cache.get(id(t))
            if hit is None or hit[0]() is not t:
                hit = self.cache[id(t)] = (weakref.ref(t), t.to(to))
            return hit[1]

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            name = getattr(func, "__name__", "")
            rule = self.policy.rule(name) if self.policy else None
            if rule in (LOWER, FP32, PROMOTE):
                to = torch.float32 if rule == FP32 else self.dtype
                if rule == PROMOTE and any(isinstance(t, torch.Tensor) and t.dtype == torch.float32
                                           for t in tree_leaves((args, kwargs))):
                    to = torch.float32
                args, kwargs = tree_map_only(torch.Tensor, lambda t: self._cast(t, to), (args, kwargs))
            elif rule == FP32_DTYPE:
                first = args[0] if args else None
                if (isinstance(first, torch.Tensor) and first.is_floating_point() and kwargs.get("dtype") is None
                        and not any(isinstance(a, torch.dtype) for a in args)):
                    kwargs["dtype"] = torch.float32
            if (name == "scaled_dot_product_attention" and args[0].device.type == "meta"
                    and kwargs.get("attn_mask", args[3] if len(args) > 3 else None) is None):
                return fused_sdpa(*args, **kwargs)
            return func(*args, **kwargs)

    return MetaSemantics


def _autocast_dtype(setup: TrainSetup) -> Any:
    """HF Trainer autocasts whenever bf16/fp16 is set, also over a model already stored in 16 bits."""
    import torch

    if setup.precision == "fp32":
        return None
    return torch.float16 if setup.precision.startswith("fp16") else torch.bfloat16


def run_step(config: dict[str, Any], layers: int, setup: TrainSetup, device: str = "meta",
             policy: Any = None) -> dict[str, int]:
    """Peak live bytes per phase of one step of a ``layers``-layer copy of the model.

    On ``meta`` the autocast casts follow ``policy`` (CUDA's by default). ``device="cpu"`` runs
    the same step on real tensors under torch's own CPU autocast: the ground truth the meta run
    is checked against in the tests.
    """
    from unittest import mock

    import torch

    from planner.autocast_policy import CUDA

    cast_dtype = _autocast_dtype(setup)
    counter = _counter_class()()
    peaks: dict[str, int] = {}
    if device == "meta":
        semantics = _semantics_class()(policy or CUDA if cast_dtype else None, cast_dtype)
        forward_ctx = semantics
    else:  # checkpoint replays torch's own autocast state when it recomputes
        semantics = None
        forward_ctx = torch.autocast("cpu", dtype=cast_dtype) if cast_dtype else contextlib.nullcontext()
    # transformers looks for packed sequences by reading position ids (data the meta device does
    # not have); the simulated batch is unpacked, which is what that check would find.
    with mock.patch("transformers.masking_utils.find_packed_sequence_indices", lambda *a, **k: None), counter:
        model = _build(config, layers, setup, device, semantics)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=setup.optimizer == "adamw_torch",
                                      fused=False)
        ids = torch.randint(0, int(config.get("vocab_size", 2)), (setup.batch_size, setup.seq_len), device=device)
        for step in range(2):  # the second step has optimizer state and gradients from the first
            counter.reset_peak()
            if semantics:
                semantics.caching = True
            with forward_ctx:
                loss = model(input_ids=ids, labels=ids).loss
            if semantics:
                semantics.end_forward()
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
