"""The model catalog (``resources/models/*.json``) and ``--model`` resolution.

``--model`` is a catalog id, a ``config.json`` path, or a local model folder. A folder with
``*.safetensors`` gets exact counts from the tensor headers (no weights are read).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.catalog.arch import Architecture
from planner.catalog.hf_config import architecture_from_config
from planner.errors import PlannerError
from planner.resource_files import resource


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalog, with where its facts come from."""

    id: str
    config: dict[str, Any] = field(compare=False)
    source: str
    reference_params: int | None = None
    """Total computed independently from the same config fields (the reference table)."""
    published_params: int | None = None
    """Total stated by the publisher or the checkpoint index, where one exists."""
    notes: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved ``--model``: its architecture plus what the checkpoint itself says."""

    name: str
    arch: Architecture
    source: str
    checkpoint_params: int | None = None
    """Exact count from safetensors headers, when a model folder was given."""
    prequantized: str | None = None
    assumptions: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The Hugging Face config it came from (precise mode builds the real model from it)."""

    @property
    def total_params(self) -> int:
        return self.checkpoint_params or self.arch.total_params


@lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    entries: dict[str, CatalogEntry] = {}
    files = sorted((f for f in resource("models").iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    for file in files:
        for raw in json.loads(file.read_text(encoding="utf-8"))["entries"]:
            entry = CatalogEntry(
                id=raw["id"],
                config=raw["config"],
                source=raw["source"],
                reference_params=raw.get("reference_params"),
                published_params=raw.get("published_params"),
                notes=raw.get("notes", ""),
            )
            entries[entry.id] = entry
    return entries


def suggest(name: str, n: int = 3) -> list[str]:
    """Closest catalog ids, matching on the full id and on the part after the slash."""
    ids = list(catalog())
    lowered = {i.lower(): i for i in ids} | {i.split("/")[-1].lower(): i for i in ids}
    hits = difflib.get_close_matches(name.lower().split("/")[-1], list(lowered), n=n, cutoff=0.4)
    out: list[str] = []
    for h in hits:
        if lowered[h] not in out:
            out.append(lowered[h])
    return out


def _lookup(name: str) -> CatalogEntry | None:
    entries = catalog()
    if name in entries:
        return entries[name]
    folded = {k.lower(): v for k, v in entries.items()}
    short = {k.split("/")[-1].lower(): v for k, v in entries.items()}
    return folded.get(name.lower()) or short.get(name.lower())


def adapter_base(folder: Path) -> str | None:
    """The base model a peft adapter folder names (``adapter_config.json``'s
    ``base_model_name_or_path``), None when it names none; PlannerError when the folder is not a
    peft adapter folder."""
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise PlannerError(f"{folder} is not a peft adapter folder (no adapter_config.json)")
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise PlannerError(f"{config}: cannot read it ({exc})") from None
    return str(base) if base else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlannerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise PlannerError(f"{path} is not a model config: JSON nested too deeply; pass the model's "
                           "config.json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PlannerError(f"{path} is not valid JSON ({first}); pass the model's config.json") from None
    if not isinstance(cfg, dict):
        raise PlannerError(f"{path} must hold a JSON object (a Hugging Face config.json)")
    return cfg


def _from_folder(folder: Path) -> ModelSpec:
    from planner.catalog.safetensors_header import CheckpointError, read_checkpoint

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise PlannerError(f"{folder} has no config.json; pass a Hugging Face model folder or a config.json")
    raw = _read_config(config_path)
    arch = architecture_from_config(raw, str(config_path))
    try:
        ckpt = read_checkpoint(folder)
    except CheckpointError as exc:
        raise PlannerError(str(exc)) from None
    if ckpt is None:
        return ModelSpec(str(folder), arch, f"{config_path} (no *.safetensors: counted from config)", config=raw)
    notes: tuple[str, ...] = ()
    if ckpt.quantization:
        notes = (f"checkpoint is pre-quantized ({ckpt.quantization}); parameters counted unpacked",)
    counted = ckpt.param_count()
    if abs(counted - arch.total_params) > 0.01 * arch.total_params:
        notes += (f"the safetensors hold {counted:,} parameters but config.json describes "
                  f"{arch.total_params:,}: totals follow the checkpoint, per-module terms the config",)
    return ModelSpec(str(folder), arch, f"{folder} (safetensors headers: {len(ckpt.files)} file(s))",
                     checkpoint_params=counted, prequantized=ckpt.quantization,
                     assumptions=notes, config=raw)


MAX_SUGGEST_CHARS = 200
"""Names longer than any catalog id get no "did you mean" (difflib is quadratic in the length)."""


def _kind(path: Path) -> str | None:
    """``"dir"``, ``"file"`` or None (nothing there, or nothing that can be there). Why not
    ``Path.is_dir``: it raises for a name longer than 255 bytes (ENAMETOOLONG), a name the file
    system refuses, or ``~user`` with no such user; all of those are simply "not a path"."""
    try:
        path = path.expanduser()
        if path.is_dir():
            return "dir"
        return "file" if path.is_file() else None
    except (OSError, ValueError, RuntimeError):
        return None


def _short(name: str) -> str:
    """``name`` as an error message quotes it: one line, at most MAX_SUGGEST_CHARS characters."""
    flat = " ".join(name.split())
    return flat if len(flat) <= MAX_SUGGEST_CHARS else f"{flat[:60]}... ({len(name)} characters)"


def resolve_model(name: str) -> ModelSpec:
    """Turn ``--model`` into a :class:`ModelSpec`, or raise :class:`PlannerError`."""
    if not name or not name.strip():
        raise PlannerError("--model is empty; give a catalog id such as meta-llama/Llama-2-7b-hf")
    entry = _lookup(name)
    if entry is not None:
        arch = architecture_from_config(entry.config, f"catalog entry {entry.id}")
        return ModelSpec(entry.id, arch, entry.source, assumptions=arch.assumptions, config=entry.config)
    kind = _kind(Path(name))
    if kind == "dir":
        return _from_folder(Path(name).expanduser())
    if kind == "file":
        path = Path(name).expanduser()
        raw = _read_config(path)
        arch = architecture_from_config(raw, str(path))
        return ModelSpec(str(path), arch, str(path), assumptions=arch.assumptions, config=raw)
    looks_like_path = name.endswith(".json") or name.startswith((".", "/", "~")) or "\\" in name
    if looks_like_path:
        raise PlannerError(f"no such file or folder: {_short(name)}")
    close = suggest(name) if len(name) <= MAX_SUGGEST_CHARS else []
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `python -m planner table` for the catalog"
    raise PlannerError(f"unknown model '{_short(name)}'{hint}")
