"""``python -m planner gpus`` in words: NVML's GPUs and their processes, host RAM and CPU."""

from __future__ import annotations

from planner.catalog.gpus import match_nvml
from planner.hardware import Gpu, Inventory
from planner.units import GiB


def num(value: float | None, fmt: str, scale: float = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value / scale:{fmt}}{unit}"


def table(rows: list[list[str]], right: set[int], indent: str = "") -> list[str]:
    """Columns aligned, the ``right`` ones to the right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def plan_line(g: Gpu) -> str | None:
    """Which catalog entry a detected GPU plans with, and that plans use NVML's own total."""
    if not g.memory_total:
        return None
    total = f"the {g.memory_total / GiB:.2f} GiB NVML reports"
    spec = match_nvml(g.name, g.memory_total) if g.name else None
    if spec is not None:
        return f"GPU {g.index}: catalog {spec.name} ({spec.datasheet_gb:g} GB datasheet); plans use {total}"
    from planner.targets import nearest_spec

    return (f"GPU {g.index}: not in the catalog; plans use {total}, with the speed and price of "
            f"{nearest_spec(g.memory_total).name}")


def inventory_lines(inv: Inventory) -> list[str]:
    """The lines of ``planner.hardware.inventory()``, tables aligned."""
    lines = [] if inv.gpus else [f"no NVIDIA GPU: {inv.reason}"]
    versions = [f"{label} {v}" for label, v in (("driver", inv.driver_version), ("CUDA", inv.cuda_driver_version)) if v]
    if versions:
        lines.append("NVIDIA " + " · ".join(versions))
    if inv.gpus:
        rows = [["#", "name", "memory used / total", "util", "temp", "power / limit", "CC", "MIG"]]
        for g in inv.gpus:
            rows.append([
                str(g.index), g.name or "n/a",
                f"{num(g.memory_used, '.1f', GiB)} / {num(g.memory_total, '.1f', GiB)} GiB",
                num(g.utilization_gpu, ".0f", unit=" %"), num(g.temperature_c, ".0f", unit=" C"),
                f"{num(g.power_w, '.0f')} / {num(g.power_limit_w, '.0f')} W",
                "{}.{}".format(*g.compute_capability) if g.compute_capability else "n/a",
                "n/a" if g.mig_enabled is None else ("on" if g.mig_enabled else "off"),
            ])
        lines += table(rows, right={0, 2, 3, 4, 5})
        lines += [line for line in map(plan_line, inv.gpus) if line]
        for g in inv.gpus:
            if not g.processes:
                lines.append(f"GPU {g.index} processes: {'n/a' if g.processes is None else 'none'}")
                continue
            lines.append(f"GPU {g.index} processes:")
            rows = [["pid", "name", "GPU memory", "type"]]
            rows += [[str(p.pid), p.name or "n/a",
                      "n/a" if p.used_memory is None else f"{p.used_memory / GiB:.2f} GiB", p.kind]
                     for p in g.processes]
            lines += table(rows, right={0, 2}, indent="  ")
    h = inv.host
    if h.ram_total is not None and h.ram_available is not None:
        lines.append(f"host RAM: {h.ram_available / GiB:.1f} GiB available of {h.ram_total / GiB:.1f} GiB")
    cpu = [h.cpu_model or "CPU", f"{h.cpu_count} logical cores" if h.cpu_count else "",
           f"load {h.load_average:.2f} (1 min)" if h.load_average is not None else "",
           f"{h.cpu_percent:.0f}% busy" if h.cpu_percent is not None else ""]
    lines.append("host CPU: " + ", ".join(x for x in cpu if x))
    lines += [f"note: {n}" for n in inv.notes]
    return lines
