"""scripts/compare_estimators.py: the memory-saving techniques, analytic vs precise mode, on a
small subset of the sweep (each point is one simulated step)."""

import pytest
from scripttools import load_script

LLAMA = "meta-llama/Llama-3.1-8B"


@pytest.fixture(scope="module")
def script():
    return load_script("compare_estimators")


def test_the_sweep_tries_each_technique_where_it_applies(script):
    points = script.technique_points()
    assert len(points) == len(script.TECHNIQUE_MODELS) * len(script.TECHNIQUE_SEQS) * (4 + 3 + 4)
    assert {t for _, method, _, t in points if method == "full"} == {"chunked", "offload", "in-backward", "all"}
    assert script.technique_changes("qlora", "all") == {"loss": "chunked", "kbit_prepare": False,
                                                        "offload_activations": True}
    assert script.technique_changes("full", "all") == {"loss": "chunked", "offload_activations": True,
                                                       "optimizer_in_backward": True}
    with pytest.raises(ValueError):
        script.technique_changes("lora", "no-upcast")


@pytest.mark.parametrize("model, method, seq, technique", [
    *((LLAMA, "qlora", 8192, t) for t in ("chunked", "no-upcast", "offload", "all")),
    ("Qwen/Qwen2.5-0.5B", "lora", 2048, "chunked"),  # tied embeddings
    ("Qwen/Qwen2.5-0.5B", "full", 2048, "all"),  # tied: the embedding's step in backward sets the peak
])
def test_analytic_agrees_with_precise_mode(script, model, method, seq, technique):
    p = script.compare(model, script.technique_setup(model, method, seq, technique))
    assert p.divergence is not None, p.reason
    assert abs(p.divergence) <= script.BOUND, f"analytic {p.analytic / 2**30:.2f} GiB vs {p.simulated / 2**30:.2f}"
    assert p.analytic_host == pytest.approx(p.simulated_host, rel=0.01)
    assert (p.analytic_host > 0) == (technique in ("offload", "all"))
    assert (p.setup.optimizer_in_backward) == (method == "full" and technique == "all")
