"""The Plan page's side panels without Qt: the model-size table, time and cost per GPU.

Pure functions over the form values, so they are tested without widgets and cost microseconds
per estimate (the page recomputes all of it on every edit, well under its 50 ms budget).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.catalog import ModelSpec
from planner.catalog.gpus import GpuSpec, gpu_catalog
from planner.cost import run_cost
from planner.gui.plan.model import FormValues, my_setup, setup_for, with_data
from planner.memory import estimate
from planner.samples import SampleLengths
from planner.table import ADAPTER_NOTE, COLUMNS, MOE_LAYOUT, classic_table, moe_columns
from planner.units import GiB


@dataclass(frozen=True)
class SizeCell:
    device_used_gib: float
    fits: bool


@dataclass(frozen=True)
class SizesTable:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[SizeCell, ...]], ...]
    """(row label such as "QLoRA 4", cells per column)."""
    column_notes: tuple[str, ...]
    """Per column, what its estimates assume beyond the row (the MoE layout), or ""."""
    row_notes: tuple[str, ...] = ()
    """Per row, what it assumes beyond its label (the other adapters' base and checkpointing), or ""."""


def sizes_table(values: FormValues, gpu_bytes: int) -> SizesTable:
    """The classic 7B..8x22B table for this form's batch, sequence and options, by fit on the GPU."""
    # the rows set the method; the optimizer in backward (a full fine-tuning switch) needs a full base
    source = setup_for(values, "full", None) if values.optimizer_in_backward else my_setup(values)
    base = replace(source, method="full" if source.optimizer_in_backward else "lora", quant=None, modules_to_save=())
    rows, row_notes = [], []
    for row in classic_table(base):
        cells = tuple(SizeCell(e.device_used_bytes / GiB, e.device_used_bytes <= gpu_bytes) for e in row.estimates)
        rows.append((f"{row.method} {row.bits}", cells))
        row_notes.append(ADAPTER_NOTE if row.method not in ("Full", "LoRA", "QLoRA") else "")
    moe = moe_columns()
    notes = tuple(f"{size}: mixture of experts. {MOE_LAYOUT}." if size in moe else "" for size, _ in COLUMNS)
    return SizesTable(tuple(size for size, _ in COLUMNS), tuple(rows), notes, tuple(row_notes))


@dataclass(frozen=True)
class CostRow:
    gpu: str
    count: int
    fits: bool
    device_used_gib: float
    tokens_per_second: float
    hours: float
    energy_kwh: float
    cost_usd: float | None
    price_note: str
    time_shares: tuple[tuple[str, float], ...] = ()
    """Where a step's time goes, largest first (planner.cost.StepTime.shares)."""


def cost_rows(values: FormValues, model: ModelSpec, this_gpu: GpuSpec | None, this_memory: int,
              usd_per_kwh: float | None = None, *, local: bool = False,
              lengths: SampleLengths | None = None) -> tuple[CostRow, ...]:
    """Hours, kWh and $ of the user's setup on the GPU planned for, then on every catalog GPU with a price.

    ``this_gpu`` (with ``this_memory``, the memory planned against) is the planned GPU's spec;
    ``local`` says NVML sees that GPU on this machine (a ``GpuTarget`` from NVML). Only then is it
    "this GPU", costed in electricity; otherwise it is the GPU planned for, costed at its price.
    ``lengths``: the data file's, once measured (model.with_data).
    """
    setup, tokens = with_data(my_setup(values), values, lengths)
    used = estimate(model, setup).device_used_bytes
    rows = []
    candidates: list[tuple[GpuSpec, int, bool]] = []
    if this_gpu is not None:
        candidates.append((this_gpu, this_memory, True))
    candidates += [(g, g.memory_bytes, False) for g in gpu_catalog().values()
                   if g.prices and (this_gpu is None or g.name != this_gpu.name)]
    for spec, memory, planned in candidates:
        mine = planned and local
        # your own card costs electricity; a catalog card costs its rental price
        own_power = mine and usd_per_kwh is not None
        cost = run_cost(model.arch, setup, replace(spec, prices=()) if own_power else spec,
                        tokens, values.epochs, usd_per_kwh=usd_per_kwh if own_power else None)
        price = spec.price()
        note = (f"your GPU: electricity at {usd_per_kwh:.2f} $/kWh" if own_power else
                f"{price.usd_per_hour:.2f} $/h, {price.source}, {price.date}" if price else "no price")
        if mine and usd_per_kwh is None and price is None:
            note = "your GPU: set an electricity price for its cost"
        rows.append(CostRow(_label(spec, memory, planned, mine), setup.num_gpus, used <= memory, used / GiB,
                            cost.tokens_per_second, cost.hours or 0.0, cost.energy_kwh or 0.0, cost.cost_usd, note,
                            tuple(cost.step.shares().items())))
    first, cloud = (rows[:1], rows[1:]) if this_gpu is not None else ([], rows)
    cloud.sort(key=lambda r: (not r.fits, r.cost_usd if r.cost_usd is not None else float("inf")))
    return tuple(first + cloud)


def _label(spec: GpuSpec, memory: int, planned: bool, mine: bool) -> str:
    """``this GPU: RTX 4090`` only for a GPU NVML sees here; otherwise the GPU planned for, with
    its memory when that is not the catalog's (a custom size borrowing this entry's speed)."""
    if not planned:
        return spec.name
    if mine:
        return f"this GPU: {spec.name}"
    size = f"{memory / GiB:.1f}"
    return "planned: " + (spec.name if size == f"{spec.memory_bytes / GiB:.1f}" else f"{spec.name} at {size} GiB")
