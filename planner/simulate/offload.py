"""Activation offloading: the saved-tensor hooks behind transformers' ``offload``, where torch's
own cannot run, counting the host memory they hold.

transformers (5.x) offloads by wrapping each checkpointed layer in torch's
``save_on_cpu(pin_memory=True)`` (``PreTrainedModel._activation_checkpointing_enable``): the
layer's input, the one tensor non-reentrant checkpointing saves, is copied to pinned host memory
in forward and back when backward recomputes the layer. The trainer and precise mode run that
very code, with :func:`host_offload` putting these hooks in its place:

- on a machine without an accelerator, transformers 5.24 with torch 2.13 asks for pinned memory,
  which only an accelerator provides (``RuntimeError: pin_memory=True requires a CUDA or other
  accelerator backend``); the tensors are in host memory already, so they are kept unpinned
  (tests/trainer/test_offload_activations.py pins this behaviour);
- on the meta device (precise mode) there is no data to copy: the hooks keep the shape, count
  the bytes host memory would hold, and hand back a fresh meta tensor for the recompute.

Shared by the trainer and precise mode (one implementation), like ``moe_layout``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any


class HostBytes:
    """Bytes the offload hooks hold in host memory: now and at the peak."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.packed = 0
        """Tensors packed so far (one per checkpointed layer per step)."""

    def hold(self, owner: object, nbytes: int) -> None:
        self.current += nbytes
        self.packed += 1
        self.peak = max(self.peak, self.current)
        weakref.finalize(owner, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        self.current -= nbytes


class _Packed:
    """One offloaded tensor: its host copy (None on meta) and what rebuilds it."""

    __slots__ = ("__weakref__", "device", "host", "meta")

    def __init__(self, device: Any, host: Any, meta: tuple | None) -> None:
        self.device, self.host, self.meta = device, host, meta


def _hooks_class(counter: HostBytes) -> type:
    import torch

    def accelerator() -> bool:
        probe = getattr(torch, "accelerator", None)
        return bool(probe.is_available()) if probe else torch.cuda.is_available()

    class SaveOnHost(torch.autograd.graph.save_on_cpu):
        """torch's ``save_on_cpu``, unpinned without an accelerator, shape-only on meta."""

        def __init__(self, pin_memory: bool = False, device_type: str = "cuda") -> None:
            super().__init__(pin_memory=pin_memory and accelerator(), device_type=device_type)
            pack_real, unpack_real = self.pack_hook, self.unpack_hook

            def pack(t: Any) -> _Packed:
                if t.device.type == "meta":
                    packed = _Packed(t.device, None, (t.shape, t.stride(), t.dtype))
                else:
                    packed = _Packed(*pack_real(t), None)
                counter.hold(packed, t.numel() * t.element_size())  # what save_on_cpu copies
                return packed

            def unpack(packed: _Packed) -> Any:
                if packed.meta is not None:
                    shape, stride, dtype = packed.meta
                    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                return unpack_real((packed.device, packed.host))

            self.pack_hook, self.unpack_hook = pack, unpack

    return SaveOnHost


@contextlib.contextmanager
def host_offload() -> Iterator[HostBytes]:
    """While held, transformers' activation offloading uses :func:`_hooks_class`'s hooks;
    yields the count of host bytes they hold."""
    from unittest import mock

    counter = HostBytes()
    with mock.patch("transformers.modeling_utils.save_on_cpu", _hooks_class(counter)):
        yield counter
