"""The GPU catalog (``resources/gpus.json``): memory, speed, power and a dated price per GPU.

Memory is what the driver reports (nvidia-smi's total, NVML's ``memory.total``), cited per card;
the datasheet's GB is kept beside it for display only. A "24 GB" RTX 4090 reports 24,564 MiB, a
"16 GB" T4 15,360 MiB (ECC on: the driver keeps 1/16), so planning against the datasheet figure
read as GiB calls plans fits that do not fit.

Prices are snapshots that go stale: each carries its date and source, and the user can override
them (settings). NVML names map to entries with :func:`match_nvml`; ``--gpu NAME`` with
:func:`find_gpu`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from planner.errors import PlannerError
from planner.resource_files import resource
from planner.units import GiB, MiB, fmt_gib

GPUS_JSON = resource("gpus.json")
SEGMENTS = ("consumer", "workstation", "datacenter")
GENERATIONS = ("Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell")
"""NVIDIA architectures, oldest first (the product family names each: RTX 30 and A-series are Ampere,
RTX 40 and L-series Ada, H-series Hopper, RTX 50 and B-series Blackwell)."""
PRICE_KINDS = ("on-demand", "spot", "community")

MEMORY_TOLERANCE = 0.08
"""How far NVML's total may sit from the catalog's and still be that card. The catalog holds the
total the driver reports with the card's default ECC setting; toggling ECC moves it by 1/16 (an A40
reports 46,068 MiB with ECC on, 49,140 MiB off: 6.7%), and older drivers reported a little less
(T4 15,109 MiB before 510). Well below the 33% between the 8 and 12 GB RTX 3060, which share a name."""

_VARIANT_SUFFIXES = frozenset({"ti", "super", "d", "laptop", "mobile", "max", "nvl"})
"""A token right after a matched name that makes it another product (``RTX 3060 Ti``, ``RTX 4080
SUPER``, ``RTX 4090 D``, ``... Laptop GPU``, ``Max-Q``, ``H200 NVL``): no match, rather than a wrong one."""

_VENDOR_WORDS = ("nvidia", "geforce", "tesla")

MAX_NAME_CHARS = 200
"""Longer than any catalog or NVML device name (NVML's buffer holds 96 bytes)."""


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    source: str
    date: str
    """ISO month or day of the snapshot, e.g. ``2026-03``."""
    kind: str = "on-demand"
    """``on-demand``, ``spot`` or ``community``."""


@dataclass(frozen=True)
class GpuSpec:
    name: str
    """Catalog name, e.g. ``RTX 4090`` or ``A100 80GB SXM``."""
    memory_bytes: int
    """Total device memory as the driver reports it (nvidia-smi / NVML), what plans are checked
    against; ``memory_source`` says where the figure comes from."""
    bandwidth_bytes_per_s: float
    bf16_flops: float | None
    """Dense tensor-core FLOP/s that PyTorch's 16-bit matmuls reach at best (fp32 accumulation:
    on GeForce cards that is half the marketing fp16-accumulate figure). None: no bf16."""
    fp16_flops: float
    """Dense fp16 tensor FLOP/s with fp32 accumulation (for GPUs without bf16, e.g. T4, V100)."""
    tdp_watts: float
    bf16: bool
    segment: str
    """``consumer``, ``workstation`` or ``datacenter``: the card's market (the time model treats every
    segment alike: planner.calibration.MATMUL_UTILIZATION)."""
    link_bytes_per_s: float
    """GPU-to-GPU bandwidth per direction of the card's standard link (NVLink on SXM boards, else its
    PCIe slot; optional NVLink bridges are not assumed), what collectives move bytes over."""
    link: str
    generation: str = ""
    """NVIDIA's architecture (``GENERATIONS``): the time model's errors are reported per generation."""
    prices: tuple[Price, ...] = ()
    nvml_names: tuple[str, ...] = ()
    """Substrings of NVML device names that identify this GPU (matched case-insensitively)."""
    source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()
    """Extra ``--gpu`` spellings, e.g. ``a100-80g`` or ``h100``, for the common name of a family."""
    datasheet_gb: float = 0.0
    """The memory size the vendor advertises (decimal-ish GB), shown beside ``memory_bytes``."""
    memory_source: str = ""
    """Where ``memory_bytes`` comes from: a published nvidia-smi output, cloud or vendor docs."""

    @property
    def peak_flops(self) -> float:
        """The 16-bit peak a training run uses: bf16 where supported, else fp16."""
        return self.bf16_flops if self.bf16 and self.bf16_flops else self.fp16_flops

    def price(self, kind: str = "on-demand") -> Price | None:
        for p in self.prices:
            if p.kind == kind:
                return p
        return self.prices[0] if self.prices else None


def _spec(raw: dict[str, Any]) -> GpuSpec:
    """One JSON entry in the catalog's units (GiB, GB/s, TFLOPS) -> a spec in base units."""
    bf16 = raw["bf16_tflops_dense"]
    return GpuSpec(
        name=raw["name"],
        memory_bytes=int(raw["memory_mib"]) * MiB,
        bandwidth_bytes_per_s=raw["bandwidth_gb_s"] * 1e9,
        bf16_flops=None if bf16 is None else bf16 * 1e12,
        fp16_flops=raw["fp16_tflops_dense"] * 1e12,
        tdp_watts=float(raw["tdp_w"]),
        bf16=bool(raw["bf16"]),
        segment=raw["segment"],
        generation=raw["generation"],
        prices=tuple(Price(float(p["usd_per_hour"]), p["source"], p["date"], p.get("kind", "on-demand"))
                     for p in raw["prices"]),
        nvml_names=tuple(raw["nvml_names"]),
        source=raw["source"],
        notes=raw.get("notes", ""),
        aliases=tuple(raw.get("aliases", ())),
        datasheet_gb=float(raw["memory_gb"]),
        memory_source=raw["memory_source"],
        link_bytes_per_s=float(raw["link_gb_s"]) * 1e9,
        link=raw["link"],
    )


def memory_text(spec: GpuSpec) -> str:
    """The datasheet size and what plans use, e.g. ``24 GB datasheet, 23.99 GiB usable``."""
    return f"{spec.datasheet_gb:g} GB datasheet, {fmt_gib(spec.memory_bytes / GiB)} usable"


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GpuSpec]:
    """Catalog name -> spec, in file order (loaded once: the GUI and CLI ask often)."""
    specs: dict[str, GpuSpec] = {}
    for raw in json.loads(GPUS_JSON.read_text(encoding="utf-8"))["entries"]:
        spec = _spec(raw)
        if spec.name in specs:
            raise ValueError(f"{GPUS_JSON}: duplicate GPU {spec.name!r}")
        specs[spec.name] = spec
    return specs


def _tokens(text: str) -> tuple[str, ...]:
    """Lower-case alphanumeric runs: ``A100-SXM4-80GB`` and ``a100 sxm4 80gb`` compare equal, and
    ``A10`` never matches inside ``A100`` because tokens compare whole."""
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def _key(text: str) -> str:
    """Lookup key for ``--gpu``: no case, spaces or punctuation, no leading vendor words."""
    key = "".join(_tokens(text))
    while word := next((w for w in _VENDOR_WORDS if key.startswith(w) and len(key) > len(w)), ""):
        key = key[len(word):]
    return key


@lru_cache(maxsize=1)
def _alias_table() -> dict[str, str]:
    """Every accepted ``--gpu`` key -> catalog name: the name and aliases, each also without a
    leading ``rtx`` (``4090``) and with ``gb`` written ``g`` (``a100-40g``)."""
    table: dict[str, str] = {}
    for spec in gpu_catalog().values():
        for text in (spec.name, *spec.aliases):
            key = _key(text)
            for variant in {key, key.removeprefix("rtx"), key.replace("gb", "g"),
                            key.removeprefix("rtx").replace("gb", "g")}:
                if table.setdefault(variant, spec.name) != spec.name:
                    raise ValueError(f"{GPUS_JSON}: '{variant}' names both {table[variant]} and {spec.name}")
    return table


def _closest(key: str, n: int = 2) -> list[str]:
    """Catalog names nearest to a mistyped key; ties go to the longer common prefix (4099 -> 4080,
    not 3090)."""
    best: dict[str, tuple[float, int]] = {}
    for k, name in _alias_table().items():
        score = (difflib.SequenceMatcher(None, key, k).ratio(), len(os.path.commonprefix([key, k])))
        best[name] = max(best.get(name, score), score)
    ranked = sorted(best, key=lambda name: best[name], reverse=True)
    return [name for name in ranked if best[name][0] >= 0.5][:n]


def find_gpu(name: str) -> GpuSpec:
    """``--gpu NAME``: a catalog name, alias or NVML device name, in any case and punctuation.

    Raises PlannerError with one line naming the closest catalog GPUs.
    """
    specs = gpu_catalog()
    if len(name) > MAX_NAME_CHARS:  # no GPU is called that; difflib would take seconds to say so
        raise PlannerError(f"unknown GPU '{' '.join(name[:60].split())}...' ({len(name)} characters); "
                           f"known GPUs: {', '.join(specs)}")
    hit = _alias_table().get(_key(name))
    if hit is not None:
        return specs[hit]
    spec = match_nvml(name)
    if spec is not None:
        return spec
    shown = " ".join(name.split())
    close = _closest(_key(name))
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known GPUs: {', '.join(specs)}"
    raise PlannerError(f"unknown GPU '{shown}'{hint}")


def _contains(tokens: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """``pattern`` occurs as whole tokens in ``tokens`` and is not followed by a variant suffix."""
    width = len(pattern)
    for i in range(len(tokens) - width + 1):
        if tokens[i:i + width] == pattern:
            after = tokens[i + width] if i + width < len(tokens) else None
            if after not in _VARIANT_SUFFIXES:
                return True
    return False


def match_nvml(nvml_name: str, memory_bytes: int | None = None) -> GpuSpec | None:
    """The catalog entry for an NVML device name (``nvmlDeviceGetName``), or None if unknown.

    The longest matching pattern wins (``H100 NVL`` over a shorter one). With ``memory_bytes``
    (NVML's total) only entries within MEMORY_TOLERANCE qualify, so an 8 GiB RTX 3060 is None,
    not the 12 GB entry. A MIG slice (``... MIG 1g.10gb``) maps to its parent GPU and its memory
    is ignored: the caller accounts for the slice.
    """
    tokens = _tokens(nvml_name)
    if "mig" in tokens:
        memory_bytes = None
    best: GpuSpec | None = None
    best_rank: tuple[int, int, float] | None = None
    for spec in gpu_catalog().values():
        off = 0.0 if memory_bytes is None else abs(memory_bytes - spec.memory_bytes) / spec.memory_bytes
        if off > MEMORY_TOLERANCE:
            continue
        for pattern in spec.nvml_names:
            words = _tokens(pattern)
            rank = (len(words), len(pattern), -off)
            if _contains(tokens, words) and (best_rank is None or rank > best_rank):
                best, best_rank = spec, rank
    return best
