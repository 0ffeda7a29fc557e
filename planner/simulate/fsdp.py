"""FSDP on the meta device: rank 0 of ``n`` GPUs, sharded by accelerate's own FSDP2 preparation.

The trainer shards with transformers' Trainer on accelerate (``fsdp2_prepare_model``: one unit per
decoder layer, the input embedding its own unit, the final norm and LM head one unit kept
gathered after forward, the root last; trainable 16-bit parameters upcast to fp32 masters under
mixed precision; ``MixedPrecisionPolicy`` with the autocast dtype). Precise mode calls that very
function over torch's fake process group (``torch.testing._internal.distributed.fake_pg``:
collectives that return at once), so the shards, the all-gather and reduce-scatter buffers and
the sharded optimizer state are torch's own, at their real sizes.

FSDP2 is not written for the meta device (torch 2.13). Four private hooks, patched only inside
:func:`fake_world` (tests/test_simulate_fsdp.py pins the torch version they were read at):

- ``FSDPParamGroup._validate_no_meta_params`` refuses meta parameters: skipped;
- ``_get_device_from_mesh`` names the mesh's device (the CPU for gloo): meta instead, so
  FSDP's buffers are meta tensors;
- FSDP asks ``torch.<device>`` for streams and events: ``torch.meta`` is lent ``torch.cpu``'s
  (no-ops: one stream);
- FSDP frees and refills the unsharded parameters by resizing their storage in place
  (``alloc_storage``/``free_storage``), which no dispatch mode sees: wrapped to tell the counter.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from planner.options import TrainSetup


@contextlib.contextmanager
def fake_world(num_gpus: int, resized: Callable[[Any], None], device: str = "meta") -> Iterator[None]:
    """A process group of ``num_gpus`` ranks in which this process is rank 0 and collectives do
    nothing; FSDP2 telling ``resized`` of every storage it frees or refills in place, and on
    ``device="meta"`` patched to run on meta tensors (``"cpu"``: real tensors, the ground truth
    the tests hold the meta step to). Everything is restored on exit."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    group = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_param_group")
    init = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_init")
    api = importlib.import_module("torch.distributed.fsdp._fully_shard._fully_shard")
    param = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_param")
    if dist.is_initialized():
        raise RuntimeError("precise mode simulates several GPUs in a process with no process group of its own")

    def meta_device(mesh: Any) -> Any:
        return torch.device("meta")

    def telling(resize: Callable[[Any], None]) -> Callable[[Any], None]:
        def wrapper(tensor: Any) -> None:
            resize(tensor)
            resized(tensor)
        return wrapper

    saved = (group.FSDPParamGroup._validate_no_meta_params, init._get_device_from_mesh, api._get_device_from_mesh,
             param.alloc_storage, param.free_storage, group.alloc_storage)
    param.alloc_storage = group.alloc_storage = telling(saved[3])
    param.free_storage = telling(saved[4])
    if device == "meta":
        group.FSDPParamGroup._validate_no_meta_params = lambda self: None
        init._get_device_from_mesh = api._get_device_from_mesh = meta_device
        torch.meta = torch.cpu  # type: ignore[attr-defined]
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=num_gpus)
    try:
        yield
    finally:
        dist.destroy_process_group()
        if device == "meta":
            del torch.meta  # type: ignore[attr-defined]
        (group.FSDPParamGroup._validate_no_meta_params, init._get_device_from_mesh, api._get_device_from_mesh,
         param.alloc_storage, param.free_storage, group.alloc_storage) = saved


def shard(model: Any, setup: TrainSetup) -> Any:
    """``model`` sharded as the trainer's accelerate shards it (trainer/arguments.py: FSDP2,
    transformer-based wrapping, reshard after forward)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                            auto_wrap_policy="transformer_based_wrap",
                                            cpu_ram_efficient_loading=False, state_dict_type="SHARDED_STATE_DICT")
    mixed = "no" if setup.precision == "fp32" else setup.precision.split("-")[0]
    if mixed != "no":
        plugin.set_mixed_precision(mixed)
    # what fsdp2_prepare_model reads of the Accelerator; not the main process, so it does not log
    # through accelerate's logger (which needs an initialised accelerate state)
    accelerator = types.SimpleNamespace(state=types.SimpleNamespace(fsdp_plugin=plugin), mixed_precision=mixed,
                                        is_main_process=False, device=None)
    # accelerate captures the state dict for its cpu_ram_efficient_loading (off here), which
    # bitsandbytes' 4-bit layers make by reading a scalar, and meta tensors hold none
    with mock.patch.object(model, "state_dict", lambda *args, **kwargs: {}):
        return fsdp2_prepare_model(accelerator, model)
