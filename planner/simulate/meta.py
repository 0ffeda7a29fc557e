"""What a GPU training step does that a meta-device step would not, and the bytes it keeps alive.

``live_bytes_class``: a dispatch mode adding up every live storage, as the caching allocator
would see it (also run on real CPU tensors, where it counts what torch allocates: the trainer's
CPU runs measure their tensor memory with it, trainer/tensor_memory.py).
``persistent_tensors``: what a step keeps from one step to the next, by category.
``semantics_class``: CUDA autocast's casts (from torch's own op table) and the fused SDPA kernel.
``flash_attention``: flash-attn's allocations, registered as a transformers attention function.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

from planner.options import TrainSetup


def live_bytes_class() -> type:
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
            self._serials = itertools.count()
            self.born: dict[int, int] = {}
            """Each live storage's serial number: addresses are reused once freed, so a storage
            is (address, serial)."""
            self.peak_live: dict[tuple[int, int], int] = {}
            self.peak_saved = 0
            """The live storages at the peak, by ``identity``, and the saved bytes among them:
            what precise mode breaks down by category."""

        def _raise_peak(self, value: int) -> None:
            if value > self.peak:
                self.peak = value
                self._snapshot()

        def identity(self, t: Any) -> tuple[int, int]:
            """A tracked tensor's storage, told apart from earlier ones at the same address."""
            key = local(t).untyped_storage()._cdata
            return key, self.born.get(key, -1)

        def _snapshot(self) -> None:
            self.peak_live = {(k, self.born[k]): size for k, size in self.live.items()}
            self.peak_saved = sum(self.live[k] for k in self.saved)

        def mark_saved(self, persistent: set[int]) -> None:
            self.saved = set(self.live) - persistent

        def track(self, t: Any) -> None:
            storage = local(t).untyped_storage()
            key = storage._cdata
            if key in self.live:
                return
            size = storage.nbytes()
            self.live[key] = size
            self.born[key] = next(self._serials)
            self.current += size
            self._raise_peak(self.current)
            weakref.finalize(storage, self._release, key)

        def _release(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)
            self.born.pop(key, None)
            self.saved.discard(key)

        def resized(self, t: Any) -> None:
            """A storage resized in place (FSDP frees and refills its unsharded parameters so)."""
            storage = local(t).untyped_storage()
            key = storage._cdata
            if key not in self.live:
                self.track(t)
                return
            self.current += storage.nbytes() - self.live[key]
            self.live[key] = storage.nbytes()
            self._raise_peak(self.current)

        def reseed(self, tensors: list[Any]) -> None:
            """Count exactly ``tensors`` as what exists now. FSDP frees the unsharded parameters it
            replaces through references this counter never hears of dropping."""
            self.live, self.born, self.current, self.saved = {}, {}, 0, set()
            for t in tensors:
                self.track(t)
            self.reset_peak()

        def reset_peak(self) -> None:
            self.peak = self.current
            self._snapshot()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            gemm = self.gpu_kernels and func.__name__.startswith("gemm_4bit")
            if gemm and args[0].numel() // args[0].shape[-1] > 512:
                # bitsandbytes' CUDA gemm_4bit dequantizes the whole weight, then calls F.linear,
                # for more than 512 rows: a 16-bit (N, K) transient beside the output
                n, k = args[2]
                self._raise_peak(self.current + out.nbytes + n * k * out.element_size())
            tree_map_only(torch.Tensor, self.track, out)
            return out

    return LiveBytes


def local(t: Any) -> Any:
    """A tensor's own storage holder: a DTensor's (FSDP's shards) is this rank's local tensor."""
    return getattr(t, "_local_tensor", t)


def persistent_tensors(model: Any, optimizer: Any = None) -> dict[str, list[Any]]:
    """What a training step keeps from one step to the next, by category: the weights (with
    bitsandbytes' quantization state), the gradients, the optimizer's state (each parameter's
    optimizer's when it steps in backward; accelerate's wrapper looked through; none without an
    optimizer, as when generating)."""
    import torch

    def tensors(values: Any) -> list[Any]:
        return [local(t) for t in values if isinstance(t, torch.Tensor)]

    weights = [*model.parameters(), *model.buffers()]
    for param in model.parameters():  # bitsandbytes keeps absmax and code tables beside the packed weight
        state = getattr(param, "quant_state", None)
        while state is not None:
            weights += list(vars(state).values())
            state = getattr(state, "state2", None)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    optimizer = getattr(optimizer, "optimizer", optimizer)
    optimizers = getattr(optimizer, "optimizers", [optimizer]) if optimizer is not None else []
    states = [t for opt in optimizers for per_param in opt.state.values() for t in per_param.values()]
    # AdaLoRA's rank allocator: each adapter tensor's importance and its two moving averages
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None:
        states += [t for kept in (allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc) for t in kept.values()]
    return {"parameters": tensors(weights), "gradients": tensors(grads), "optimizer_state": tensors(states)}


def flash_attention(half: Any) -> str:
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


def semantics_class() -> type:
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


def autocast_dtype(setup: TrainSetup) -> Any:
    """HF Trainer autocasts whenever bf16/fp16 is set, also over a model already stored in 16 bits."""
    import torch

    if setup.precision == "fp32":
        return None
    return torch.float16 if setup.precision.startswith("fp16") else torch.bfloat16

