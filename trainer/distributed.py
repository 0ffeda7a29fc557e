"""Several processes on PyTorch's own stack, as the workers see it (trainer/launcher.py starts them).

Every worker runs the same ``Run``; rank 0 alone speaks (events on the inherited stdout, ``metrics.jsonl``,
the summary and the final save). Commands reach the ranks through ``<run_dir>/commands``, where
the launcher appends what stdin and SIGTERM send. Every rank acts on a command at the same step
(an all-reduce of its code): a rank that stopped alone would leave the others waiting in a
collective forever.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from trainer.rundir import PEER_ERROR

# PEER_ERROR: what a rank other than 0 failed with. Only rank 0 speaks, so it (or the launcher,
# when rank 0 was killed) reports a peer's own error, e.g. an out-of-memory on GPU 1, rather than
# the broken collective it left behind.
_CODES = {"checkpoint": 1, "stop": 2, "cancel": 3}
"""All-reduced with MAX: when commands collide the more final one wins."""


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS")
"""What torchrun tells its workers. A SLURM or torchrun shell exports them too, and the app
passes its environment on: a plain ``trainer run`` that believed them would think it is rank 1
of 2 and never speak, or crash parsing ``RANK=abc``."""


def forget_inherited_launch() -> None:
    """Called by every process but the launcher's own workers, before torch or accelerate read the
    environment: this process is the whole run (or the launcher of its workers), nothing else.
    accelerate's own ``ACCELERATE_*`` launch settings go too: the run config is the one source."""
    for key in list(os.environ):
        if key in LAUNCH_VARIABLES or key.startswith("ACCELERATE_"):
            del os.environ[key]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def agree(commands: list[str]) -> list[str]:
    """The command every rank acts on at this step (one rank's commands, all ranks' decision)."""
    if world_size() == 1:
        return commands
    import torch
    import torch.distributed as dist

    code = max((_CODES.get(c, 0) for c in commands), default=0)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([code], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    decided = int(flag.item())
    return [name for name, c in _CODES.items() if c == decided]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (a collective: all ranks must call it)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def follow(path: Path, put: Any, stop: threading.Event) -> None:
    """Feed each line appended to ``path`` to ``put`` until ``stop`` is set (rank 0's ears)."""
    from trainer.protocol import parse_command

    offset = 0
    while not stop.wait(0.2):
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except OSError:
            continue
        complete = chunk[: chunk.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            command = parse_command(line)
            if command:
                put(command)


def report_peer_error(run_dir: Path, fields: dict[str, Any]) -> None:
    """A failing rank other than 0 leaves its error event's fields for rank 0 and the launcher."""
    import json

    from planner.atomic import atomic_write_text

    atomic_write_text(run_dir / PEER_ERROR.format(rank()), json.dumps({**fields, "rank": rank()}))


def peer_error(run_dir: Path, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The lowest failed rank's error fields, waiting up to ``wait_s`` for one to appear (rank 0
    sees a collective break as soon as the peer dies, possibly before its file is written)."""
    import json
    import time

    deadline = time.monotonic() + wait_s
    while True:
        found = sorted(run_dir.glob(PEER_ERROR.format("*")), key=lambda p: int(p.name.split(".")[1][4:]))
        for path in found:
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def full_weights(model: Any) -> dict[str, Any]:
    """The whole state dict of a sharded model, on rank 0's CPU (a collective every rank joins;
    the others get an empty dict). Checkpoints stay sharded; the final model is whole."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def fsdp_on_cpu(trainer: Any) -> None:
    """torch's FSDP2 shards over gloo on the CPU too, but accelerate enables its FSDP plugin on
    GPU-like devices only (a CPU run would silently replicate instead). Switch it on: the CPU
    then runs the very FSDP path GPUs run, which is how the tests check it without a GPU."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
