"""``python -m planner recommend``: the GPU planned for, the machine's RAM, and the output."""

from __future__ import annotations

import argparse
from dataclasses import replace

from planner.cli_options import print_json, setup_from_args, with_data_file
from planner.errors import PlannerError
from planner.options import TrainSetup
from planner.units import GiB

PER_TOKENS = 1_000_000
"""Data set size assumed when --dataset-tokens is not given (the figures are then rates)."""


def _gpu_target(a: argparse.Namespace, count: int, prices):
    from planner.catalog.gpus import find_gpu
    from planner.targets import catalog_target, custom_target, detected_target

    if a.gpu_memory_gib is not None:
        return custom_target(a.gpu_memory_gib, count, prices)
    if a.gpu == "auto":
        from planner.hardware import inventory

        inv = inventory()
        if not inv.gpus:
            raise PlannerError(f"--gpu auto found no NVIDIA GPU ({inv.reason}); pass --gpu NAME "
                               "(e.g. --gpu 'RTX 4090') or --gpu-memory-gib X")
        g = inv.gpus[0]
        if g.name is None or not g.memory_total:
            raise PlannerError("--gpu auto: NVML did not report GPU 0's name or memory; pass --gpu NAME "
                               "or --gpu-memory-gib X")
        return detected_target(g.name, g.memory_total, g.index, count, prices)
    return catalog_target(find_gpu(a.gpu), count, prices)


def _dataset_tokens(a: argparse.Namespace, base: TrainSetup) -> int | None:
    """--dataset-tokens, else what --data trains on at the planned length."""
    if a.dataset_tokens is not None or base.lengths is None:
        return a.dataset_tokens
    return base.lengths.tokens(base.seq_len)


def _recommend_kwargs(a: argparse.Namespace, prices, base: TrainSetup) -> dict:
    electricity = a.electricity_price if a.electricity_price is not None else prices.electricity_usd_per_kwh
    # Without a data set size, hours, energy and cost are given per million tokens: still numbers
    return dict(dataset_tokens=_dataset_tokens(a, base) or PER_TOKENS, epochs=a.epochs, max_quality=a.max_quality,
                usd_per_hour=a.price_per_hour, usd_per_kwh=electricity, host_memory=_host_memory(a))


def _host_memory(a: argparse.Namespace) -> int | None:
    """The RAM offloading may use: --host-ram-gib, else this machine's when planning for its own
    GPU (--gpu auto), else unknown (the plan says what it needs instead)."""
    if a.host_ram_gib is not None:
        return int(a.host_ram_gib * GiB)
    if a.gpu == "auto":
        from planner.hardware import ram_total

        return ram_total()
    return None


def cmd_recommend(a: argparse.Namespace) -> int:
    from planner.catalog import resolve_model
    from planner.recommend import METHODS, recommend
    from planner.settings import load_prices

    if (a.gpu is None) == (a.gpu_memory_gib is None):
        raise PlannerError("give one of --gpu NAME|auto|any or --gpu-memory-gib X")
    base = with_data_file(a, setup_from_args(a))
    model = resolve_model(a.model)
    prices = load_prices()  # once per command: a bad settings file warns once
    if a.gpu == "any":
        return _recommend_any(a, model, base, prices)
    methods: tuple[tuple[str, str | None], ...] = METHODS
    if a.method:  # DESIGN: with --method given, only that method's options (an empty one: the default)
        methods = tuple((m, q) for m, q in METHODS if m == base.method and (a.quant is None or q == base.quant))
        if not methods:  # e.g. qlora with fp4: recommend compares the bases the trainer offers
            offered = ", ".join(q for m, q in METHODS if m == base.method and q)
            raise PlannerError(f"recommend compares --method {base.method} with --quant {offered}, not "
                               f"{base.quant}; use `python -m planner estimate` for a {base.quant} base")
    rec = recommend(model, base, _gpu_target(a, base.num_gpus, prices), methods=methods,
                    **_recommend_kwargs(a, prices, base))
    if _dataset_tokens(a, base) is None and rec.best is not None:
        rec = replace(rec, explanation=rec.explanation + f" Hours, kWh and $ are per {PER_TOKENS:,} tokens "
                      "(give --dataset-tokens for your data set).")
    if a.json:
        print_json(rec.to_json())
        return 0
    from planner.recommend_text import recommendation_lines

    print("\n".join(recommendation_lines(rec)))
    return 0


def _recommend_any(a: argparse.Namespace, model, base, prices) -> int:
    from planner.catalog.gpus import gpu_catalog
    from planner.recommend import recommend
    from planner.recommend_text import ranking_lines
    from planner.targets import catalog_target

    kwargs = _recommend_kwargs(a, prices, base)
    ranked = []  # (recommendation, its best option): only GPUs something fits on
    for spec in gpu_catalog().values():
        rec = recommend(model, base, catalog_target(spec, base.num_gpus, prices), alternatives=False, **kwargs)
        if rec.best is not None:
            ranked.append((rec, rec.best))
    # cheapest total cost first; without a price or dataset size, fastest first
    ranked.sort(key=lambda pair: (pair[1].cost_usd is None, pair[1].cost_usd or 0.0, -pair[1].tokens_per_second))
    if a.json:
        print_json({"ranking": [{**r.to_json()["gpu"], "option": best.to_json(), "explanation": r.explanation}
                                for r, best in ranked]})
        return 0
    print("\n".join(ranking_lines([r for r, _ in ranked])))
    return 0
