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


# --- issue 12: invalid prices warn, deep nesting is no traceback -------------------------------

@pytest.mark.parametrize("value, shown", [("-1", "-1"), ('"cheap"', "'cheap'"), ("NaN", "nan"), ("1e300", "1e+300"),
                                          ("1000000", "1000000"), ("true", "True"), ("9" * 400, "400-digit")])
def test_invalid_price_warns_once_per_load(settings, capsys, value, shown):
    settings.write_text('{"gpu_usd_per_hour": {"RTX 4090": ' + value + ', "L4": 0.5}}')
    assert load_prices() == Prices({"L4": 0.5})
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'warning: {settings}: ignoring gpu_usd_per_hour["RTX 4090"] = ')
    assert shown in err[0] and err[0].endswith(": must be a number >= 0 and < 1e6")
    load_prices()
    assert len(capsys.readouterr().err.splitlines()) == 1  # the next load says it again, once


def test_all_invalid_entries_share_one_line(settings, capsys):
    settings.write_text('{"gpu_usd_per_hour": {"A": -1, "B": "x"}, "electricity_usd_per_kwh": -0.3}')
    assert load_prices() == Prices()
    (line,) = capsys.readouterr().err.splitlines()
    assert 'gpu_usd_per_hour["A"] = -1' in line and 'gpu_usd_per_hour["B"]' in line
    assert "electricity_usd_per_kwh = -0.3" in line


@pytest.mark.parametrize("content", ["[" * 100_000, '{"a":' * 100_000, '{"x": ' + "9" * 5000 + "}"],
                         ids=["deep-list", "deep-object", "5000-digit-int"])
def test_unparseable_settings_are_one_warning(settings, capsys, content):
    settings.write_text(content)
    assert load_prices() == Prices()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {settings}: ignoring the settings")


def test_recommend_warns_once_about_bad_settings(settings, capsys):
    settings.write_text('{"gpu_usd_per_hour": {"RTX 4090": -5}}')
    assert main(["recommend", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX 4090", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("warning: ")
    json.loads(captured.out)
