"""What went wrong, by kind: the filesystem, memory, or a bug. Standard library only."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

from trainer.rundir import RunDirError, claimed

IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
"""Write failures the user fixes outside the trainer: free space, permissions, quota, hardware."""


class RunDirGone(RunDirError):
    """The run directory was deleted or moved while the run trained."""


def ensure_present(run_dir: Path) -> None:
    """Raise :class:`RunDirGone` when the run directory (its marker) vanished: saving then would
    recreate a half folder nobody asked for, and the run would end "completed" with nothing kept."""
    if not claimed(run_dir):
        raise RunDirGone(f"the run directory {run_dir} was deleted or moved while training; nothing more was saved")


def io_fault(exc: BaseException) -> str | None:
    """One line for a filesystem fault, else None. Not every writer raises OSError: torch's
    checkpoint writer raises RuntimeError ("PytorchStreamWriter failed writing file"), and
    safetensors its own SafetensorError naming the OS error number."""
    if isinstance(exc, RunDirGone):
        return str(exc)
    cause = exc
    while cause is not None:  # transformers and safetensors wrap the OSError they hit
        if isinstance(cause, OSError) and cause.errno in IO_ERRNOS:
            where = f" ({cause.filename})" if cause.filename else ""
            return f"cannot write{where}: {cause.strerror or cause}"
        text = str(cause)
        if "failed writing file" in text:
            return f"cannot write a checkpoint: {text.splitlines()[0]}"
        found = re.search(r"os error (\d+)", text)  # safetensors' Rust writer: "I/O error: ... (os error 28)"
        if found and int(found.group(1)) in IO_ERRNOS:
            return f"cannot write: {os.strerror(int(found.group(1)))}"
        cause = cause.__cause__ or cause.__context__
    return None


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    return bool(torch is not None and isinstance(exc, torch.OutOfMemoryError))
