"""planner/gui/plan/extras.cost_rows: the time-and-cost rows, without widgets (issue 13.12: "this
GPU: RTX 4090" on a machine with no GPU)."""

from __future__ import annotations

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu, gpu_catalog
from planner.gui.plan.extras import cost_rows
from planner.gui.plan.model import FormValues
from planner.units import GiB

VALUES = FormValues()
MODEL = resolve_model(VALUES.model)


def test_a_catalog_gpu_is_planned_for_not_this_gpu():
    """No NVML GPU: the default RTX 4090 is the GPU planned for, costed at its rental price."""
    spec = find_gpu("RTX 4090")
    rows = cost_rows(VALUES, MODEL, spec, spec.memory_bytes, usd_per_kwh=0.30)
    assert rows[0].gpu == "planned: RTX 4090"
    assert not any(r.gpu.startswith("this GPU") for r in rows)
    assert "electricity" not in rows[0].price_note and "$/h" in rows[0].price_note
    assert [r.gpu for r in rows].count("RTX 4090") == 0  # listed once, first
    assert len(rows) == sum(1 for g in gpu_catalog().values() if g.prices)


def test_a_gpu_nvml_sees_is_this_gpu_and_costs_electricity():
    spec = find_gpu("RTX 4090")
    rows = cost_rows(VALUES, MODEL, spec, 24 * GiB, usd_per_kwh=0.30, local=True)
    assert rows[0].gpu == "this GPU: RTX 4090"
    assert rows[0].price_note == "your GPU: electricity at 0.30 $/kWh"
    assert sum(r.gpu.startswith("this GPU") for r in rows) == 1


def test_a_custom_size_says_its_memory_and_whose_speed():
    spec = find_gpu("RTX 4090")
    rows = cost_rows(VALUES, MODEL, spec, 20 * GiB)
    assert rows[0].gpu == "planned: RTX 4090 at 20.0 GiB"
    assert rows[0].fits == (rows[0].device_used_gib <= 20)


def test_rows_fit_against_the_driver_reported_memory():
    """A catalog row fits when the estimate is within the card's nvidia-smi total (a T4's 15.0 GiB)."""
    rows = {r.gpu: r for r in cost_rows(VALUES, MODEL, None, 0)}
    t4 = rows["T4"]
    assert t4.fits == (t4.device_used_gib * GiB <= find_gpu("T4").memory_bytes)
