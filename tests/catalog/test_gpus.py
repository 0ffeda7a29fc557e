"""The GPU catalog: every entry is sane and cited, NVML names map to the right entry (and the
look-alikes to none), ``--gpu`` spellings resolve, and unknown names fail in one line."""

import json
import re

import pytest

from planner.catalog.gpus import (
    GENERATIONS,
    GPUS_JSON,
    MEMORY_TOLERANCE,
    PRICE_KINDS,
    SEGMENTS,
    find_gpu,
    gpu_catalog,
    match_nvml,
    memory_text,
)
from planner.errors import PlannerError
from planner.units import GiB, MiB, fmt_gib

ENTRIES = list(gpu_catalog().values())

REQUIRED = [
    "RTX 3060 12GB", "RTX 3090", "RTX 4060 Ti 16GB", "RTX 4080", "RTX 4090", "RTX 5090", "RTX A6000",
    "RTX 6000 Ada", "T4", "L4", "A10G", "A10", "L40S", "A100 40GB", "A100 80GB SXM", "A100 80GB PCIe",
    "H100 PCIe", "H100 SXM", "H100 NVL", "H200 SXM", "B200", "V100 32GB",
]


def test_catalog_covers_the_required_gpus_and_is_cached():
    assert len(ENTRIES) >= 22
    assert set(REQUIRED) <= set(gpu_catalog())
    assert gpu_catalog() is gpu_catalog()


@pytest.mark.parametrize("gpu", ENTRIES, ids=[g.name for g in ENTRIES])
def test_entry(gpu):
    assert 4 * GiB <= gpu.memory_bytes <= 256 * GiB
    assert 100e9 <= gpu.bandwidth_bytes_per_s <= 10e12
    assert 30 <= gpu.tdp_watts <= 1200
    assert gpu.peak_flops > 0 and gpu.fp16_flops > 0
    assert gpu.bf16 == (gpu.bf16_flops is not None)
    if gpu.bf16_flops is not None:
        assert 10e12 <= gpu.bf16_flops <= 3e15
    assert gpu.segment in SEGMENTS and gpu.generation in GENERATIONS
    for p in gpu.prices:
        assert p.usd_per_hour > 0 and p.source
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", p.date), p.date
        assert p.kind in PRICE_KINDS
    assert gpu.source.strip(), "every entry cites where its facts come from"
    assert gpu.nvml_names
    # its own NVML names, as NVML prints them and with NVML's memory total (the catalog's, or with
    # ECC toggled: 1/16 more or less), come back to it
    for nvml in gpu.nvml_names:
        for total in (gpu.memory_bytes, gpu.memory_bytes * 15 // 16, gpu.memory_bytes * 16 // 15):
            assert match_nvml(f"NVIDIA {nvml}", total) is gpu
    assert find_gpu(gpu.name) is gpu
    assert find_gpu(gpu.name.lower().replace(" ", "-")) is gpu


RAW = {raw["name"]: raw for raw in json.loads(GPUS_JSON.read_text(encoding="utf-8"))["entries"]}


@pytest.mark.parametrize("gpu", ENTRIES, ids=[g.name for g in ENTRIES])
def test_memory_is_the_driver_total_with_a_source_and_the_datasheet_beside_it(gpu):
    """Issue 13.4: every card stores what nvidia-smi reports (MiB) with where that comes from, and
    the datasheet's GB as a separate field; the GB figure is never read as GiB."""
    raw = RAW[gpu.name]
    assert "memory_gib" not in raw
    assert isinstance(raw["memory_mib"], int) and raw["memory_mib"] * MiB == gpu.memory_bytes
    assert raw["memory_gb"] == gpu.datasheet_gb > 0
    assert "MiB" in gpu.memory_source and str(raw["memory_mib"]) in gpu.memory_source.replace(",", "")
    # the driver never reports more than the datasheet figure read as GiB, and keeps at least 15/16
    # of it (the ECC carve-out; GPU-reserved memory is smaller still)
    assert 15 / 16 * 0.99 <= gpu.memory_bytes / (gpu.datasheet_gb * GiB) <= 1.0
    assert memory_text(gpu) == f"{gpu.datasheet_gb:g} GB datasheet, {fmt_gib(gpu.memory_bytes / GiB)} usable"


@pytest.mark.parametrize("name, mib", [
    # the figures: nvidia-smi totals on real cards (ECC on for T4, L4, A10, A10G, L40S)
    ("T4", 15360), ("L4", 23034), ("A10", 23028), ("A10G", 23028), ("L40S", 46068), ("H100 SXM", 81559),
    ("RTX 4090", 24564), ("A100 80GB SXM", 81920),
])
def test_driver_reported_totals(name, mib):
    assert find_gpu(name).memory_bytes == mib * MiB


def test_memory_text_is_compact():
    assert memory_text(find_gpu("RTX 4090")) == "24 GB datasheet, 23.99 GiB usable"
    assert memory_text(find_gpu("T4")) == "16 GB datasheet, 15 GiB usable"


def test_tolerance_spans_an_ecc_toggle_but_not_a_smaller_card():
    assert 16 / 15 - 1 < MEMORY_TOLERANCE < 1 - 8 / 12


@pytest.mark.parametrize("name, tflops", [
    # GeForce: fp32 accumulation runs at half the fp16-accumulate rate (Ada/RTX Blackwell whitepapers)
    ("RTX 3090", 71.2), ("RTX 4090", 165.2), ("RTX 5090", 209.5),
    # pro and datacenter cards: full rate
    ("RTX A6000", 154.8), ("A100 80GB SXM", 312), ("H100 SXM", 989.5),
])
def test_bf16_peak_is_dense_with_fp32_accumulation(name, tflops):
    assert find_gpu(name).bf16_flops == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name, tflops", [("T4", 65), ("V100 32GB", 125), ("V100 16GB", 125)])
def test_peak_flops_falls_back_to_fp16_without_bf16(name, tflops):
    gpu = find_gpu(name)
    assert not gpu.bf16 and gpu.bf16_flops is None
    assert gpu.peak_flops == pytest.approx(tflops * 1e12)


def test_peak_flops_uses_bf16_where_supported():
    assert find_gpu("A100 80GB SXM").peak_flops == pytest.approx(312e12)


def test_prices_are_the_reference_snapshots():
    h100 = find_gpu("H100 SXM")
    assert h100.price().usd_per_hour == 4.76 and h100.price().date == "2026-03"
    assert h100.price("spot").usd_per_hour == 2.69
    assert [p.usd_per_hour for p in find_gpu("T4").prices] == [0.59]
    assert find_gpu("A10G").prices == () and find_gpu("A10G").price() is None


NVML_CASES = [
    ("NVIDIA GeForce RTX 4090", 24564 * MiB, "RTX 4090"),
    ("NVIDIA GeForce RTX 4090", None, "RTX 4090"),
    ("NVIDIA GeForce RTX 3090", 24576 * MiB, "RTX 3090"),
    ("NVIDIA GeForce RTX 3090 Ti", 24564 * MiB, "RTX 3090 Ti"),
    ("NVIDIA GeForce RTX 4080", 16376 * MiB, "RTX 4080"),
    ("NVIDIA GeForce RTX 5090", 32607 * MiB, "RTX 5090"),
    ("NVIDIA GeForce RTX 3060", 12288 * MiB, "RTX 3060 12GB"),
    ("NVIDIA GeForce RTX 3060", 8192 * MiB, None),
    ("NVIDIA GeForce RTX 4060 Ti", 16380 * MiB, "RTX 4060 Ti 16GB"),
    ("NVIDIA GeForce RTX 4060 Ti", 8188 * MiB, None),
    ("NVIDIA A100-SXM4-80GB", 81920 * MiB, "A100 80GB SXM"),
    ("NVIDIA A100-SXM4-40GB", 40960 * MiB, "A100 40GB"),
    ("NVIDIA A100-PCIE-40GB", 40960 * MiB, "A100 40GB"),
    ("NVIDIA A100 80GB PCIe", 81920 * MiB, "A100 80GB PCIe"),
    ("NVIDIA H100 80GB HBM3", 81559 * MiB, "H100 SXM"),
    ("NVIDIA H100 PCIe", 81559 * MiB, "H100 PCIe"),
    ("NVIDIA H100 NVL", 95830 * MiB, "H100 NVL"),
    ("NVIDIA H200", 143771 * MiB, "H200 SXM"),
    ("NVIDIA H200 NVL", 143771 * MiB, "H200 NVL"),
    ("NVIDIA B200", 183359 * MiB, "B200"),
    ("Tesla T4", 15360 * MiB, "T4"),
    ("Tesla T4", 15109 * MiB, "T4"),  # drivers before 510
    ("NVIDIA A40", 49140 * MiB, "A40"),  # ECC turned off
    ("NVIDIA RTX 6000 Ada Generation", 46068 * MiB, "RTX 6000 Ada"),  # ECC turned on
    ("Tesla V100-SXM2-16GB", 16160 * MiB, "V100 16GB"),  # older drivers
    ("NVIDIA A10G", 23028 * MiB, "A10G"),
    ("NVIDIA A10", 23028 * MiB, "A10"),
    ("NVIDIA L4", 23034 * MiB, "L4"),
    ("NVIDIA L40", 46068 * MiB, "L40"),
    ("NVIDIA L40S", 46068 * MiB, "L40S"),
    ("NVIDIA RTX A6000", 49140 * MiB, "RTX A6000"),
    ("NVIDIA RTX 6000 Ada Generation", 49140 * MiB, "RTX 6000 Ada"),
    ("Tesla V100-SXM2-32GB", 32768 * MiB, "V100 32GB"),
    ("Tesla V100-SXM2-16GB", 16384 * MiB, "V100 16GB"),
    # MIG slices map to the parent; their memory is the slice's, so it is ignored
    ("NVIDIA A100-SXM4-80GB MIG 1g.10gb", 9728 * MiB, "A100 80GB SXM"),
    ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40192 * MiB, "H100 SXM"),
    # look-alikes: a different product is None, never a wrong entry
    ("NVIDIA GeForce RTX 3060 Ti", 8192 * MiB, None),
    ("NVIDIA GeForce RTX 3060 Ti", None, None),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", 6144 * MiB, None),
    ("NVIDIA GeForce RTX 4080 SUPER", 16376 * MiB, None),
    ("NVIDIA GeForce RTX 4070 Ti", 12282 * MiB, None),
    ("NVIDIA GeForce RTX 4090 D", 24564 * MiB, None),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", 16376 * MiB, None),
    ("Quadro RTX 6000", 24576 * MiB, None),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 97887 * MiB, None),
    ("NVIDIA GH200 144G HBM3e", 146 * GiB, None),
    ("NVIDIA GeForce RTX 4090", 48 * GiB, None),
    ("AMD Radeon RX 7900 XTX", 24 * GiB, None),
    ("", None, None),
]


@pytest.mark.parametrize("nvml_name, memory, expected", NVML_CASES,
                         ids=[f"{n or 'empty'}-{m // MiB if m else 'nomem'}" for n, m, _ in NVML_CASES])
def test_match_nvml(nvml_name, memory, expected):
    spec = match_nvml(nvml_name, memory)
    assert (spec.name if spec else None) == expected


@pytest.mark.parametrize("query, expected", [
    ("4090", "RTX 4090"), ("rtx4090", "RTX 4090"), ("RTX-4090", "RTX 4090"), ("GeForce RTX 4090", "RTX 4090"),
    ("3060", "RTX 3060 12GB"), ("4060 ti", "RTX 4060 Ti 16GB"),
    ("a6000", "RTX A6000"), ("rtx 6000 ada", "RTX 6000 Ada"), ("6000 Ada", "RTX 6000 Ada"),
    ("a100", "A100 80GB SXM"), ("a100-80g", "A100 80GB SXM"), ("A100 80GB", "A100 80GB SXM"),
    ("a100-40g", "A100 40GB"), ("a100 pcie", "A100 80GB PCIe"),
    ("h100", "H100 SXM"), ("H100_PCIe", "H100 PCIe"), ("h100 nvl", "H100 NVL"),
    ("h200", "H200 SXM"), ("v100", "V100 32GB"), ("tesla t4", "T4"), ("a10", "A10"), ("A10G", "A10G"),
    ("l40s", "L40S"), ("gh200", "GH200 96GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"), ("NVIDIA H100 80GB HBM3", "H100 SXM"),  # NVML names work too
])
def test_find_gpu_aliases(query, expected):
    assert find_gpu(query).name == expected


def test_find_gpu_unknown_is_one_line_with_the_closest_names():
    with pytest.raises(PlannerError) as err:
        find_gpu("rtx 4099")
    assert str(err.value) == "unknown GPU 'rtx 4099'; did you mean RTX 4090, RTX 4080?"


@pytest.mark.parametrize("query", ["zzzz", "radeon 7900\nxtx", ""])
def test_find_gpu_unknown_never_spans_lines(query):
    with pytest.raises(PlannerError) as err:
        find_gpu(query)
    message = str(err.value)
    assert message.startswith("unknown GPU") and "\n" not in message
