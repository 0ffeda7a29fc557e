"""Crash-safe file writes: write a temporary sibling, fsync, rename over the target.

A run killed at any instant (SIGKILL included) leaves either the old file or the new one,
never half of one. ``os.replace`` is atomic on POSIX and Windows within one filesystem.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the result should look like open()'s
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at ``path`` only when complete.

    An existing directory at ``path`` is replaced only when it is empty or when ``replace`` says
    the caller checked it is its own output; the old one is moved aside under a fresh name, then
    deleted, so a reader sees the old or the new directory, never a partial one. Anything else
    at ``path`` (a file, a symlink, someone's folder) raises FileExistsError before any write.
    """
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(errno.EEXIST, "exists and is not a folder", str(target))
    if target.is_dir() and not replace and any(target.iterdir()):
        raise FileExistsError(errno.EEXIST, "exists and is not empty", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the result should look like mkdir's
    try:
        yield tmp
        old = None
        if target.exists():
            # a name nobody else has: renaming a folder onto an empty one is atomic on POSIX
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
