"""Read tensor names, dtypes and shapes from safetensors headers, never the weights.

Why: the planner must size a local model (parameters, bytes per dtype, quantization
scheme) in milliseconds and without importing torch. A safetensors file starts with
an 8-byte little-endian header length N followed by N bytes of JSON describing every
tensor, so reading 8 + N bytes is enough even for a 10 GB shard. Only
``*.safetensors`` files are opened: ``.bin`` files are pickles, and unpickling
untrusted data can execute code.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are a few MB; more means corruption
INDEX_NAME = "model.safetensors.index.json"

# Bits per element; sub-byte dtypes are rounded up to whole bytes per tensor.
_BITS: dict[str, int] = {"BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
                         "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
                         "F4": 4, "I4": 4, "U4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_INT_DTYPES = frozenset({"I4", "U4", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"})
_LARGE_INT_NUMEL = 1 << 20  # int tensors this big are packed weights, not index buffers
_BNB4_MARK = ".quant_state.bitsandbytes__"
_BNB4_SIBLINGS = (".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4", ".absmax")
_BNB8_AUX = (".SCB", ".weight_format")
_GPTQ_AUX = (".qzeros", ".scales", ".g_idx")
_FP8_AUX = (".weight_scale", ".weight_scale_inv", ".input_scale")
_PARAMS_PER_PACKED_BYTE = 2  # 4-bit formats (bnb nf4/fp4, gptq/awq int4) store 2 values per byte


class CheckpointError(ValueError):
    """A safetensors file or index is unreadable; str() is one line naming the file and the fix."""


def _bits(dtype: str) -> int | None:
    """Element width in bits, or None for a dtype this module does not know."""
    return _BITS.get(dtype) or (8 if dtype.startswith("F8_") else None)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as described by a header: enough to size it without loading it."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of stored elements (1 for a scalar)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Stored size in bytes; sub-byte dtypes round up so memory is never under-counted."""
        bits = _bits(self.dtype)
        if bits is None:
            raise ValueError(f"unknown safetensors dtype {self.dtype!r} for tensor {self.name!r}")
        return (self.numel * bits + 7) // 8


@dataclass(frozen=True)
class CheckpointSummary:
    """Everything the planner needs from a checkpoint's headers, in one immutable value."""

    files: tuple[str, ...]
    tensors: tuple[TensorInfo, ...]
    bytes_by_dtype: Mapping[str, int] = field(hash=False)
    total_bytes: int
    quantization: str | None

    def stored_numel(self) -> int:
        """Sum of elements as stored (packed quantized weights count per storage element)."""
        return sum(t.numel for t in self.tensors)

    def param_count(self) -> int:
        """Logical parameters: unpacks 4-bit weights and skips quantization bookkeeping tensors.

        Why: memory formulas (LoRA ranks, optimizer states, activations) scale with the
        model's real parameter count, not with how a quantizer happened to pack it.
        """
        by_name = {t.name: t for t in self.tensors}
        packed = {t.name for t in self.tensors if any(t.name + s in by_name for s in _BNB4_SIBLINGS)}
        total = 0
        for t in self.tensors:
            if _is_aux(t.name, by_name, packed):
                continue
            if t.name in packed or t.name.endswith(".qweight"):
                total += t.nbytes * _PARAMS_PER_PACKED_BYTE
            else:
                total += t.numel
        return total


def _is_aux(name: str, by_name: Mapping[str, TensorInfo], packed: set[str]) -> bool:
    """True for quantization state (scales, zeros, absmax, ...) that is not a model parameter."""
    if any(name[:i] in packed for i, ch in enumerate(name) if ch == "."):
        return True  # bnb-4bit: <weight>.absmax, .quant_map, .nested_*, .quant_state.*
    if name.endswith(_BNB8_AUX):
        return True
    for suffix in _GPTQ_AUX:
        if name.endswith(suffix) and name[: -len(suffix)] + ".qweight" in by_name:
            return True
    for suffix in _FP8_AUX:
        weight = by_name.get(name[: -len(suffix)] + ".weight") if name.endswith(suffix) else None
        if weight is not None and weight.dtype.startswith("F8"):
            return True
    return False


def _detect_quantization(tensors: tuple[TensorInfo, ...]) -> str | None:
    """Name the quantization scheme from tensor names and dtypes alone (see module docs)."""
    names = [t.name for t in tensors]
    if any(_BNB4_MARK in n for n in names):
        return "bnb-4bit"
    if any(n.endswith(".SCB") for n in names):
        return "bnb-8bit"
    if any(n.endswith(".qweight") for n in names):
        return "gptq" if any(n.endswith(".g_idx") for n in names) else "awq"
    if any(t.dtype.startswith("F8") for t in tensors):
        return "fp8"
    if any(t.dtype in _INT_DTYPES and t.numel >= _LARGE_INT_NUMEL for t in tensors):
        return "unknown-int"
    return None


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _error(path: Path, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; {fix}.".replace("\r", " ").replace("\n", " "))


def read_header(path: Path) -> tuple[TensorInfo, ...]:
    """Parse one file's header, reading only its first 8 + N bytes."""
    redownload = "re-download the file (it is truncated or not a safetensors file)"
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _error(path, f"file is only {size} bytes, too short for a header", redownload)
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise _error(path, f"header length {n} bytes exceeds the 100 MB limit", redownload)
            if n > size - 8:
                raise _error(path, f"header length {n} bytes exceeds the file size {size}", redownload)
            raw = f.read(n)
    except OSError as exc:
        raise _error(path, f"cannot read file ({exc.strerror or exc})", "check it exists and is readable") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _error(path, f"header is not valid UTF-8 JSON ({exc})", redownload) from None
    if not isinstance(header, dict):
        raise _error(path, f"header is a JSON {type(header).__name__}, not an object", redownload)
    data_size = size - 8 - n
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(entry, dict) or "dtype" not in entry or "shape" not in entry:
            raise _error(path, f"{where} lacks 'dtype' or 'shape'", redownload)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry.get("data_offsets")
        if not isinstance(dtype, str) or _bits(dtype) is None:
            raise _error(path, f"{where} has unsupported dtype {dtype!r}", "convert it to a standard dtype")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise _error(path, f"{where} has invalid shape {shape!r} (need non-negative integers)", redownload)
        if offsets is not None:
            ok = isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)
            if not ok or offsets[0] > offsets[1]:
                raise _error(path, f"{where} has invalid data_offsets {offsets!r}", redownload)
            if offsets[1] > data_size:
                raise _error(path, f"{where} ends at byte {offsets[1]} past the data ({data_size} bytes)", redownload)
        tensors.append(TensorInfo(name=name, dtype=dtype, shape=tuple(shape)))
    return tuple(tensors)


def _shard_paths(folder: Path) -> list[Path]:
    """Shards named by the index when there is one, else every *.safetensors file, sorted."""
    index = folder / INDEX_NAME
    if not index.is_file():
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    fix = f"re-download {INDEX_NAME} or delete it to read every *.safetensors file"
    try:
        data = json.loads(index.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise _error(index, f"index is not readable UTF-8 JSON ({exc})", fix) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise _error(index, "index has no 'weight_map' object", fix)
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise _error(index, "index 'weight_map' values must be file names", fix)
    names = sorted(set(weight_map.values()))
    for name in names:
        if Path(name).name != name or not name.endswith(".safetensors"):
            raise _error(index, f"index names {name!r}, not a .safetensors file in this folder", fix)
        if not (folder / name).is_file():
            raise _error(index, f"index names shard {name!r} which does not exist", "download the missing shard")
    return [folder / name for name in names]


def summarize(files: Iterable[str], tensors: Iterable[TensorInfo]) -> CheckpointSummary:
    """Build a summary (byte totals, quantization) from already-parsed tensors."""
    tensors = tuple(tensors)
    by_dtype: dict[str, int] = {}
    for t in tensors:
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    return CheckpointSummary(files=tuple(files), tensors=tensors, bytes_by_dtype=MappingProxyType(by_dtype),
                             total_bytes=sum(by_dtype.values()), quantization=_detect_quantization(tensors))


def read_checkpoint(folder: str | os.PathLike[str]) -> CheckpointSummary | None:
    """Summarize a local model folder from its safetensors headers.

    Returns None when the folder has no *.safetensors files (e.g. only pickled .bin
    weights), so callers can fall back to config-based estimates. Raises
    CheckpointError for corrupt headers or an index naming missing shards.
    """
    root = Path(folder)
    if not root.is_dir():
        return None
    paths = _shard_paths(root)
    if not paths:
        return None
    tensors = [t for p in paths for t in read_header(p)]
    return summarize((p.name for p in paths), tensors)
