"""The user's own prices: GPU rental $/h and local electricity $/kWh, over the catalog's snapshots.

A small JSON file the app's settings dialog and the user both edit:
``$FINETUNE_PLANNER_SETTINGS`` or ``~/.config/finetune-planner/settings.json``::

    {"gpu_usd_per_hour": {"RTX 4090": 0.45, "H100 SXM": 2.10}, "electricity_usd_per_kwh": 0.31}

A missing or unreadable file means "no overrides" (one warning line, never a crash).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from planner.atomic import atomic_write_text
from planner.errors import PlannerError


def settings_path() -> Path:
    env = os.environ.get("FINETUNE_PLANNER_SETTINGS")
    return Path(env) if env else Path.home() / ".config" / "finetune-planner" / "settings.json"


@dataclass(frozen=True)
class Prices:
    gpu_usd_per_hour: dict[str, float] = field(default_factory=dict)
    electricity_usd_per_kwh: float | None = None

    def for_gpu(self, name: str) -> float | None:
        return self.gpu_usd_per_hour.get(name)


def _valid_price(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e6


def load_prices(path: Path | None = None) -> Prices:
    path = path or settings_path()
    if not path.is_file():
        return Prices()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        gpus = raw.get("gpu_usd_per_hour", {}) if isinstance(raw, dict) else {}
        power = raw.get("electricity_usd_per_kwh") if isinstance(raw, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"warning: ignoring {path}: {exc}", file=sys.stderr)
        return Prices()
    prices = {k: float(v) for k, v in gpus.items() if isinstance(k, str) and _valid_price(v)} if isinstance(gpus, dict) else {}
    return Prices(prices, float(power) if _valid_price(power) else None)


def save_prices(prices: Prices, path: Path | None = None) -> None:
    """Written whole under a temporary name, then renamed: never a half-written settings file."""
    path = path or settings_path()
    for name, value in prices.gpu_usd_per_hour.items():
        if not _valid_price(value):
            raise PlannerError(f"price for {name} must be a number >= 0, got {value!r}")
    if prices.electricity_usd_per_kwh is not None and not _valid_price(prices.electricity_usd_per_kwh):
        raise PlannerError(f"electricity price must be a number >= 0, got {prices.electricity_usd_per_kwh!r}")
    atomic_write_text(path, json.dumps({"gpu_usd_per_hour": prices.gpu_usd_per_hour,
                                        "electricity_usd_per_kwh": prices.electricity_usd_per_kwh}, indent=2) + "\n")


def with_user_price(spec, prices: Prices):
    """``spec`` with the user's $/h first, so cost figures use it over the catalog snapshot."""
    from dataclasses import replace

    from planner.catalog.gpus import Price

    value = prices.for_gpu(spec.name)
    if value is None:
        return spec
    return replace(spec, prices=(Price(value, f"your settings ({settings_path()})", "current", "on-demand"),)
                   + spec.prices)
