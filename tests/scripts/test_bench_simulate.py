"""Precise mode's footprint: simulating a 7B step stays far below 2 GiB of RSS (no weights exist)."""

from scripttools import load_script


def _script():
    return load_script("bench_simulate")


def test_a_7b_simulation_stays_under_2_gib_of_rss():
    run = _script().run_simulate("--model", "meta-llama/Llama-2-7b-hf", "--method", "lora")
    assert run.exit_code == 0, run.stderr
    # a 7B model's bf16 weights alone are 12.6 GiB: only a meta-device run fits under the bound
    assert 0 < run.max_rss_bytes < 2 * 2**30
