"""User prices override the catalog snapshots, from a settings file that never crashes the CLI."""

import json

import pytest

from planner.catalog.gpus import find_gpu
from planner.cli import main
from planner.errors import PlannerError
from planner.settings import Prices, load_prices, save_prices, with_user_price


@pytest.fixture
def settings(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    monkeypatch.setenv("FINETUNE_PLANNER_SETTINGS", str(path))
    return path


def test_round_trip_and_override(settings):
    save_prices(Prices({"RTX 4090": 0.11}, 0.25))
    prices = load_prices()
    assert prices == Prices({"RTX 4090": 0.11}, 0.25)
    spec = with_user_price(find_gpu("RTX 4090"), prices)
    assert spec.price().usd_per_hour == 0.11 and "your settings" in spec.price().source
    assert with_user_price(find_gpu("L4"), prices) == find_gpu("L4")


def test_cli_uses_the_user_price(settings, capsys):
    args = ["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--dataset-tokens",
            "36000000", "--json"]
    assert main(args) == 0
    catalog_cost = json.loads(capsys.readouterr().out)
    save_prices(Prices({"RTX 4090": 0.0}))
    assert main(args) == 0
    mine = json.loads(capsys.readouterr().out)
    best = mine["options"][mine["recommended"]]
    assert best["cost_usd"] == 0.0 != catalog_cost["options"][catalog_cost["recommended"]]["cost_usd"]


@pytest.mark.parametrize("content", ["{", "[1]", '{"gpu_usd_per_hour": {"RTX 4090": "cheap"}}', "\xff"])
def test_bad_files_are_ignored_with_a_warning(settings, content, capsys):
    settings.write_bytes(content.encode("latin-1"))
    prices = load_prices()
    assert prices.for_gpu("RTX 4090") is None


def test_bad_values_are_refused(settings):
    with pytest.raises(PlannerError):
        save_prices(Prices({"RTX 4090": -1}))
    assert not settings.exists()
