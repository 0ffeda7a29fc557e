"""The user's own prices: GPU rental $/h and local electricity $/kWh, over the catalog's snapshots.

A small JSON file the app's settings dialog and the user both edit:
``$FINETUNE_PLANNER_SETTINGS`` or ``~/.config/finetune-planner/settings.json``::

    {"gpu_usd_per_hour": {"RTX 4090": 0.45, "H100 SXM": 2.10}, "electricity_usd_per_kwh": 0.31}

A missing or unreadable file means "no overrides" (one warning line, never a crash); invalid
prices in a readable file are ignored, all of them named in one warning line per load.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from planner.atomic import atomic_write_text
from planner.errors import PlannerError, shown
from planner.options import BOUNDS

PRICE = BOUNDS["price_per_hour"]
"""Every price in the file: $/h and $/kWh share the CLI's bounds (a number >= 0 and < 1e6)."""


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
    return PRICE.contains(value)


def _warn(path: Path, what: str) -> None:
    print(f"warning: {path}: " + " ".join(what.splitlines()), file=sys.stderr)


def _read(path: Path) -> object:
    """The parsed file, or None (no file, or one that cannot be read: warned)."""
    try:
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # "[[[[..." deeper than the parser's stack
        _warn(path, "ignoring the settings: JSON nested too deeply")
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError, 4300+ digits
        _warn(path, f"ignoring the settings: {exc}")
    return None


def load_prices(path: Path | None = None) -> Prices:
    path = path or settings_path()
    raw = _read(path)
    if raw is None:
        return Prices()
    if not isinstance(raw, dict):
        _warn(path, 'ignoring the settings: expected a JSON object like {"gpu_usd_per_hour": {"RTX 4090": 0.45}}')
        return Prices()
    ignored: list[str] = []
    gpus = raw.get("gpu_usd_per_hour", {})
    if not isinstance(gpus, dict):
        ignored.append(f"gpu_usd_per_hour = {shown(gpus)}")
        gpus = {}
    prices: dict[str, float] = {}
    for name, value in gpus.items():
        if _valid_price(value):
            prices[name] = float(value)
        else:
            ignored.append(f"gpu_usd_per_hour[{json.dumps(name[:60])}] = {shown(value)}")
    power = raw.get("electricity_usd_per_kwh")
    if power is not None and not _valid_price(power):
        ignored.append(f"electricity_usd_per_kwh = {shown(power)}")
        power = None
    if ignored:  # one line per load, however many entries are wrong
        _warn(path, f"ignoring {', '.join(ignored)}: must be {PRICE.describe(with_why=False)}")
    return Prices(prices, None if power is None else float(power))


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
