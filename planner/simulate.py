"""Precise mode: run one real training step of the real model and count the bytes it allocates.

The transformers model is built from its config on the ``meta`` device (shapes and dtypes, no
storage), wrapped with the real peft LoRA, and a real forward, backward and optimizer step run on
meta tensors under a ``TorchDispatchMode`` that adds up every live storage. Nothing is allocated
in proportion to the model and no GPU is needed. One and two decoder layers are simulated and
the rest extrapolated: the layers are identical, so memory is affine in their number.

The only planner module that imports torch (lazily): the estimator stays torch-free.

QLoRA runs bitsandbytes' own ``Linear4bit`` and 8-bit optimizers through their fake kernels.
MoE LoRA/QLoRA runs the trainer's per-expert layout (planner/moe_layout.py); meta tensors carry
no routing, so every expert takes an equal share of the routed tokens.
Not simulated (a clear error, never a crash): int8 bases; sliding windows shorter than the
sequence.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

from planner.calibration import ALLOCATOR_SLACK, CUDA_CONTEXT
from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.moe_layout import needs_split, peft_targets_as_given, split_experts
from planner.options import TrainSetup

PHASES = ("forward", "backward", "optimizer")
CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")
"""At a phase's peak: weights (quantization state and adapters included), gradients, optimizer
state, what the forward left alive for backward (saved tensors, checkpointed inputs, the loss's
buffers), and everything else (recomputed layers, gradients in flight, kernel workspaces)."""


@dataclass(frozen=True)
class StepPeaks:
    phases: dict[str, int]
    """Peak live bytes per phase."""
    categories: dict[str, dict[str, int]]
    """Per phase, its peak split by category (they add up to the phase's peak)."""

    def __getitem__(self, phase: str) -> int:
        return self.phases[phase]


@dataclass(frozen=True)
class Simulation:
    model: str
    layers_simulated: tuple[int, ...]
    phase_peaks: dict[str, int]
    """Peak live bytes during each phase of the step, extrapolated to every layer."""
    categories: dict[str, int]
    """The overall peak split by category (``CATEGORIES``), extrapolated the same way."""
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    assumptions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "mode": "simulated", "layers_simulated": list(self.layers_simulated),
            "phase_peaks": dict(self.phase_peaks), "categories": dict(self.categories),
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes, "device_used_bytes": self.device_used_bytes,
            "assumptions": list(self.assumptions),
        }


def _counter_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map_only

    class LiveBytes(TorchDispatchMode):
        """Adds up the storages that exist, as the caching allocator would see them allocated."""

        def __init__(self, gpu_kernels: bool = True) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0
            self.gpu_kernels = gpu_kernels
            self.saved: set[int] = set()
            """Storages the forward left alive for backward (those still alive)."""
            self.peak_live: dict[int, int] = {}
            self.peak_saved = 0
            """The live storages at the peak, and the saved bytes among them: what precise mode
            breaks down by category. Keys are storage addresses, reused once freed, so the
            split is taken at the moment itself."""

        def _raise_peak(self, value: int) -> None:
            if value > self.peak:
                self.peak = value
                self._snapshot()

        def _snapshot(self) -> None:
            self.peak_live = dict(self.live)
            self.peak_saved = sum(self.live[k] for k in self.saved)

        def mark_saved(self, persistent: set[int]) -> None:
            self.saved = set(self.live) - persistent

        def track(self, t: Any) -> None:
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live:
                return
            size = storage.nbytes()
            self.live[key] = size
            self.current += size
            self._raise_peak(self.current)
            weakref.finalize(storage, self._release, key)

        def _release(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)
            self.saved.discard(key)

        def reset_peak(self) -> None:
            self.peak = self.current
            self._snapshot()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if self.gpu_kernels and func.__name__.startswith("gemm_4bit") and args[0].numel() // args[0].shape[-1] > 512:
                # bitsandbytes' CUDA gemm_4bit dequantizes the whole weight, then calls F.linear,
                # for more than 512 rows: a 16-bit (N, K) transient beside the output
                n, k = args[2]
                self._raise_peak(self.current + out.nbytes + n * k * out.element_size())
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
    if isinstance(fields.get("layer_types"), list):  # transformers checks one entry per layer
        fields["layer_types"] = fields["layer_types"][:layers]
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise PlannerError("precise mode needs the model's config.json with a model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if k != "architectures"})
    except (ValueError, KeyError) as exc:
        raise PlannerError(f"cannot simulate: transformers does not know model_type '{model_type}' ({exc})") from None
    hf_config._attn_implementation = ({"eager": "eager", "sdpa": "sdpa"}.get(setup.attention)
                                      or _flash_attention(_autocast_dtype(setup)))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(_dtype(setup.precision))
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config)
    finally:
        torch.set_default_dtype(previous)
    if setup.is_peft and needs_split(model_type):
        split_experts(model)  # the trainer's layout: one nn.Linear per expert projection
    if setup.method == "qlora":
        _quantize(model, setup)
        if setup.kbit_prepare:
            from peft import prepare_model_for_kbit_training

            # checkpointing is enabled below, as for LoRA
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if setup.is_peft:
        from peft import LoraConfig, get_peft_model

        targets = "all-linear" if "all-linear" in setup.lora_targets else list(setup.lora_targets)
        with peft_targets_as_given():
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
        if setup.is_peft:
            model.enable_input_require_grads()
    model.train()
    return model


def _bitsandbytes() -> Any:
    import logging

    # its import warns that an optional CPU kernel package is missing: noise for a simulation
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def _flash_attention(half: Any) -> str:
    """Register flash-attn's memory behaviour with transformers; returns its name.

    The flash-attn package needs CUDA. What it allocates is what the fused CPU kernel's meta
    registration allocates: the output, already laid out (b, s, h, d), and an fp32 log-sum-exp
    per head and token, with grouped K/V used as they are. Its sliding window and logit softcap
    change no sizes, so models that need them (Mistral beyond its window, Gemma 2) run too.
    Like transformers' flash path, fp32 inputs (QLoRA's fp32 projections) are cast to ``half``."""
    import torch
    from transformers import AttentionInterface

    def flash(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
        if half is not None and query.dtype == torch.float32:
            query, key, value = (t.to(half) for t in (query, key, value))
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout, True, scale=scaling)[0]
        return out.transpose(1, 2), None

    AttentionInterface.register("planner_fused", flash)
    return "planner_fused"


def _quantize(model: Any, setup: TrainSetup) -> None:
    """Swap every Linear but the LM head for bitsandbytes' ``Linear4bit``, quantized by
    bitsandbytes itself: the packed uint8 weight, the absmax per 64 weights, and under double
    quantization the 8-bit absmax with its fp32 second level, at their real sizes."""
    import torch

    bnb = _bitsandbytes()
    from bitsandbytes.functional import quantize_4bit

    if setup.quant == "int8":
        raise PlannerError("cannot simulate int8 (LLM.int8) bases yet; use `python -m planner estimate` for it")
    # bitsandbytes caches its 8-bit code table on the first device it quantizes on; a meta copy
    # cannot be moved to real tensors later
    qmaps = bnb.functional.name2qmap
    if "dynamic" in qmaps and qmaps["dynamic"].device.type == "meta":
        qmaps["dynamic"] = bnb.functional.create_dynamic_map()
    head = model.get_output_embeddings()
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, torch.nn.Linear) and child is not head]
    for parent, name, linear in swaps:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=_autocast_dtype(setup) or torch.float32, quant_type=setup.quant,
                              compress_statistics=setup.double_quant, device=linear.weight.device)
        packed, state = quantize_4bit(linear.weight.data, blocksize=64, compress_statistics=setup.double_quant,
                                      quant_type=setup.quant)
        q.weight = bnb.nn.Params4bit(data=packed, requires_grad=False, quant_state=state, quant_type=setup.quant,
                                     blocksize=64, compress_statistics=setup.double_quant, bnb_quantized=True,
                                     module=q)
        q.bias = linear.bias
        setattr(parent, name, q)


def _optimizer(name: str, params: list[Any]) -> Any:
    """The optimizer HF Trainer builds for ``optim=name``, states at their real sizes.

    Paged bitsandbytes optimizers keep the same states in CUDA managed memory, which the meta
    device cannot allocate: they are simulated unpaged, as device memory (their worst case)."""
    import torch

    if name in ("adamw_torch", "adamw_torch_fused"):
        # the fused kernel has no meta registration; its states are the foreach ones, less the
        # sqrt(exp_avg_sq) temporary
        return torch.optim.AdamW(params, lr=1e-4, foreach=name == "adamw_torch", fused=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False)
    bnb = _bitsandbytes()
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        return bnb.optim.AdamW8bit(params, lr=1e-4)
    return bnb.optim.AdamW32bit(params, lr=1e-4)  # paged_adamw_32bit


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
             policy: Any = None) -> StepPeaks:
    """Peak live bytes per phase of one step of a ``layers``-layer copy of the model.

    On ``meta`` the autocast casts follow ``policy`` (CUDA's by default). ``device="cpu"`` runs
    the same step on real tensors under torch's own CPU autocast: the ground truth the meta run
    is checked against in the tests.
    """
    from unittest import mock

    import torch

    from planner.autocast_policy import CUDA

    cast_dtype = _autocast_dtype(setup)
    counter = _counter_class()(gpu_kernels=device == "meta")
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
        optimizer = _optimizer(setup.optimizer, trainable)
        ids = torch.randint(0, int(config.get("vocab_size", 2)), (setup.batch_size, setup.seq_len), device=device)
        for step in range(2):  # the second step has optimizer state and gradients from the first
            owners = _persistent_storages(model, optimizer)
            persistent = set().union(*owners.values())
            counter.reset_peak()
            if semantics:
                semantics.caching = True
            with forward_ctx:
                loss = model(input_ids=ids, labels=ids).loss
            if semantics:
                semantics.end_forward()
            at_peak = {"forward": (counter.peak, counter.peak_live, None)}
            counter.mark_saved(persistent)
            counter.reset_peak()
            loss.backward()
            del loss
            at_peak["backward"] = (counter.peak, counter.peak_live, counter.peak_saved)
            counter.reset_peak()
            optimizer.step()
            at_peak["optimizer"] = (counter.peak, counter.peak_live, counter.peak_saved)
            if step == 0:
                optimizer.zero_grad(set_to_none=False)  # gradient accumulation keeps them allocated
    categories = {phase: _categorize(*at, owners) for phase, at in at_peak.items()}
    return StepPeaks({phase: peak for phase, (peak, _, _) in at_peak.items()}, categories)


def _persistent_storages(model: Any, optimizer: Any) -> dict[str, set[int]]:
    import torch

    def keys(tensors: Any) -> set[int]:
        return {t.untyped_storage()._cdata for t in tensors if isinstance(t, torch.Tensor)}

    weights = [*model.parameters(), *model.buffers()]
    for param in model.parameters():  # bitsandbytes keeps absmax and code tables beside the packed weight
        state = getattr(param, "quant_state", None)
        while state is not None:
            weights += list(vars(state).values())
            state = getattr(state, "state2", None)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    states = [t for per_param in optimizer.state.values() for t in per_param.values()]
    return {"parameters": keys(weights), "gradients": keys(grads), "optimizer_state": keys(states)}


def _categorize(peak: int, live: dict[int, int], saved: int | None, owners: dict[str, set[int]]) -> dict[str, int]:
    """``saved``: bytes at the peak that the forward left for backward; None for the forward's own
    peak, where everything not persistent counts as activations (the layers' saved tensors are
    most of it, and the rest cannot be told apart until the forward ends)."""
    split = dict.fromkeys(CATEGORIES, 0)
    for key, size in live.items():
        owner = next((name for name, keys in owners.items() if key in keys), None)
        split[owner or "temporaries"] += size
    split["temporaries"] += peak - sum(live.values())  # kernel transients that are never tensors
    moved = split["temporaries"] if saved is None else saved
    split["activations"], split["temporaries"] = moved, split["temporaries"] - moved
    return split


def simulate(model: ModelSpec, setup: TrainSetup) -> Simulation:
    if not model.config:
        raise PlannerError("precise mode needs the model's config.json; this model has none")
    if setup.num_gpus > 1:
        raise PlannerError("precise mode simulates one GPU; use `estimate` for --num-gpus > 1")
    window = model.config.get("sliding_window")
    if isinstance(window, int) and setup.seq_len > window and setup.attention == "sdpa":
        # an explicit band mask makes GPUs pick the memory-efficient kernel, which the meta device
        # lacks: the meta step would materialise the full score matrix instead
        raise PlannerError(f"cannot simulate sdpa's sliding-window mask beyond the window ({window} tokens); "
                           "use --attention flash_attention_2, or `python -m planner estimate`")
    try:
        one = run_step(model.config, 1, setup)
        two = run_step(model.config, 2, setup)
    except PlannerError:
        raise
    except Exception as exc:  # an op the meta device lacks, an unknown layer type: say so, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlannerError(f"cannot simulate this model: {first[:200]}") from None
    layers = model.arch.num_layers

    def extrapolate(a: int, b: int) -> int:
        return a + (layers - 1) * (b - a)

    phases = {p: extrapolate(one[p], two[p]) for p in PHASES}
    peak_phase = max(PHASES, key=phases.__getitem__)
    peak = phases[peak_phase]
    categories = {c: extrapolate(one.categories[peak_phase][c], two.categories[peak_phase][c]) for c in CATEGORIES}
    # the estimator's allocator model: slack over what the step adds on top of the weights
    transient = max(peak - min(phases.values()), 0)
    reserved = peak + int(ALLOCATOR_SLACK * transient)
    notes = [f"simulated 1 and 2 layers on the meta device and extrapolated to {layers} (identical layers)",
             "CUDA autocast replayed from torch's op table; CUDA context and allocator slack as in the analytic estimate"]
    if model.arch.is_moe:
        notes.append("MoE: routing spread evenly over the experts (tokens x top_k / experts each)"
                     + ("; experts one nn.Linear each, as the trainer builds them" if setup.is_peft else ""))
    if setup.optimizer.startswith("paged_"):
        notes.append("paged optimizer simulated unpaged: its state counted as device memory (it can spill to host)")
    return Simulation(model.name, (1, 2), phases, categories, peak, reserved, reserved + CUDA_CONTEXT, tuple(notes))
