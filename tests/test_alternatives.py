"""planner/alternatives.py: what would fit when nothing does, each alternative checked against its
own planned setup (tests/recommendtools.check_alternative), with the recommendation's headroom."""

from __future__ import annotations

from dataclasses import replace

import pytest
from recommendtools import check_alternative, model, target

from planner.catalog import resolve_model
from planner.headroom import fits_comfortably
from planner.memory import estimate
from planner.options import TrainSetup
from planner.recommend import HEADROOM, recommend


def test_more_gpus_means_the_fewest_that_fit():
    """FSDP shards over any count: 70B QLoRA on 4090s needs 3 (with the headroom the recommendation
    asks for: each holds 20.9 of 23.99 GiB, 17.5 GiB allocated, precise mode 16.3), and 2 really
    do not fit. The count is the planned setup's, not parsed from the text."""
    from planner.alternatives import what_would_fit

    spec, gpu = resolve_model("meta-llama/Llama-2-70b-hf"), target("RTX 4090")
    alternatives = what_would_fit(spec, TrainSetup(), gpu)
    qlora = next(a for a in alternatives if a.setup.method == "qlora" and a.setup.sharding == "fsdp"
                 and a.setup.offload == "none")
    n = qlora.setup.num_gpus
    assert qlora.text.startswith(f"{n} x RTX 4090 with FSDP")
    assert fits_comfortably(estimate(spec, qlora.setup).device_used_bytes, gpu.memory_bytes)
    assert not fits_comfortably(estimate(spec, replace(qlora.setup, num_gpus=n - 1)).device_used_bytes,
                                gpu.memory_bytes)
    assert n == 3


@pytest.mark.parametrize("model_id, gpu_name", [
    ("meta-llama/Llama-2-70b-hf", "RTX 4090"),  # the "16 x RTX 4090 with FSDP + LoRA: 24.0 GiB" (0% free)
    ("meta-llama/Llama-3.1-8B", "T4"),
    ("mistralai/Mixtral-8x22B-v0.1", "RTX 3060 12GB"),
])
def test_alternatives_keep_the_recommendations_headroom(model_id, gpu_name):
    """Issue 13.5: every alternative leaves HEADROOM free, as the recommendation would."""
    gpu = target(gpu_name)
    base = TrainSetup(seq_len=32768) if gpu_name == "T4" else TrainSetup()
    rec = recommend(model(model_id), base, gpu)
    assert rec.best is None and rec.alternatives
    for alt in rec.alternatives:
        assert alt.gpu_memory_bytes - alt.device_used_bytes >= HEADROOM * alt.gpu_memory_bytes, alt.text
        check_alternative(model_id, base, gpu, alt)


def test_one_gpu_with_offload_is_offered_and_marked_untrainable():
    """Issue 13.5: one GPU with CPU offload is considered, and said to be beyond the app's trainer."""
    gpu = target("RTX 4090")
    rec = recommend(model("meta-llama/Llama-2-70b-hf"), TrainSetup(), gpu)
    single = [a for a in rec.alternatives if a.setup.num_gpus == 1 and a.setup.offload != "none"]
    assert single, [a.text for a in rec.alternatives]
    for alt in single:
        assert alt.trainable is not None and "offload" in alt.trainable
        assert "The app cannot train this" in alt.line and alt.line in rec.to_json()["alternatives"]
        assert alt.setup.sharding == "fsdp" and alt.gpu_name == gpu.name
    trainable = [a for a in rec.alternatives if a.trainable is None]
    assert trainable and all(a.setup.offload == "none" for a in trainable)


def test_headroom_has_one_definition_and_no_import_circle():
    """recommend and alternatives share planner.headroom; alternatives never imports recommend,
    not even inside a function."""
    import ast
    from pathlib import Path

    import planner.headroom
    import planner.recommend

    assert planner.recommend.HEADROOM is planner.headroom.HEADROOM
    root = Path(planner.headroom.__file__).parent
    for name in ("alternatives", "headroom"):
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "planner.recommend" not in imported, name
        assert not any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "HEADROOM" for t in n.targets)
                       for n in ast.walk(tree)) or name == "headroom"
