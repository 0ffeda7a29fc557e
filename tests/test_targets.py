"""planner/targets.py: the GPU a plan is for, built the same way for the CLI and the GUI. The
memory is always the driver's: NVML's own total for a detected GPU, the catalog's nvidia-smi
total for a catalog GPU (issue 13.4)."""

from __future__ import annotations

import json

import pytest
from fake_nvml import A100, RTX4090, fresh_nvml, gpu, install, make_pynvml  # noqa: F401  (fresh_nvml: autouse)

from planner.catalog.gpus import find_gpu
from planner.cli import main
from planner.settings import Prices
from planner.targets import catalog_target, custom_target, detected_target, nearest_spec
from planner.units import GiB, MiB

NO_PRICES = Prices()


@pytest.mark.parametrize("name, total, entry", [
    ("NVIDIA GeForce RTX 4090", 24 * GiB, "RTX 4090"),
    ("NVIDIA L40S", 49140 * MiB, "L40S"),  # ECC off: more than the catalog's ECC-on 46,068 MiB
    ("Tesla T4", 15109 * MiB, "T4"),  # an older driver: less than the catalog's 15,360 MiB
])
def test_nvml_total_wins_over_the_catalog(name, total, entry):
    target = detected_target(name, total, 0, 1, NO_PRICES)
    assert (target.name, target.memory_bytes, target.source) == (name, total, "nvml")
    assert target.spec == find_gpu(entry) and target.memory_bytes != find_gpu(entry).memory_bytes


def test_detected_without_a_total_falls_back_to_the_catalog():
    target = detected_target("NVIDIA A100-SXM4-80GB", None, 3, 2, NO_PRICES)
    assert (target.memory_bytes, target.count) == (find_gpu("A100 80GB SXM").memory_bytes, 2)
    assert detected_target(None, None, 3, 1, NO_PRICES).name == "GPU 3"


def test_unknown_detected_gpu_borrows_the_nearest_speed_but_keeps_its_memory():
    target = detected_target("NVIDIA Mystery 20GB", 20 * GiB, 0, 1, NO_PRICES)
    assert target.memory_bytes == 20 * GiB and target.spec == nearest_spec(20 * GiB)


def test_catalog_and_custom_targets():
    t4 = catalog_target(find_gpu("T4"), 1, NO_PRICES)
    assert (t4.memory_bytes, t4.source) == (15360 * MiB, "catalog")
    custom = custom_target(20, 2, Prices({nearest_spec(20 * GiB).name: 0.5}))
    assert (custom.name, custom.memory_bytes, custom.count) == ("custom 20 GiB GPU", 20 * GiB, 2)
    assert custom.spec.price().usd_per_hour == 0.5  # the user's price, as in the GUI


def test_cli_gpu_auto_plans_with_nvmls_total(monkeypatch, capsys):
    install(monkeypatch, make_pynvml(gpus=[gpu(RTX4090, total=24 * GiB)]))
    assert main(["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "auto", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu"] == {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 * GiB, "count": 1, "source": "nvml"}
