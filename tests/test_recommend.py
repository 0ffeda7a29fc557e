"""planner/recommend.py (and planner/alternatives.py): which method, optimizer and micro-batch on a GPU.

Representative cases first (what a user on a 24 GiB or an 80 GiB card is told), then the search's
own invariants (max batch / max sequence are the real limits, the option grid is complete), then
properties over memory sizes, then speed.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import replace
from functools import cache
from itertools import product

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from planner.alternatives import _GPU_COUNTS
from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu, gpu_catalog
from planner.headroom import fits_comfortably
from planner.launch import why_not_trainable
from planner.memory import estimate
from planner.options import TrainSetup
from planner.recommend import BATCHES, HEADROOM, METHODS, OPTIMIZERS, recommend, search
from planner.targets import GpuTarget
from planner.units import GiB, MiB, fmt_gib


@cache
def model(name: str):
    return resolve_model(name)


def target(gpu_name: str, count: int = 1) -> GpuTarget:
    spec = find_gpu(gpu_name)
    return GpuTarget(spec.name, spec.memory_bytes, count, "catalog", spec)


def custom(gib: float, speed_of: str = "A100 80GB SXM") -> GpuTarget:
    """A GPU of any memory size, with a catalog GPU's speed (the search only reads its memory)."""
    return GpuTarget(f"custom {gib:g} GiB", int(gib * GiB), 1, "custom", find_gpu(speed_of))


def used(model_id: str, setup: TrainSetup) -> int:
    return estimate(model(model_id), setup).device_used_bytes


# ------------------------------------------------------------------ checking an alternative


def _comfortable(model_id: str, setup: TrainSetup, memory: int) -> bool:
    return fits_comfortably(used(model_id, setup), memory)


def check_alternative(model_id: str, base: TrainSetup, gpu: GpuTarget, alt) -> str:
    """Re-derive the alternative from its own planned setup: the estimate, the headroom the
    recommendation demands, the figures in its text, whether the trainer can run it, and that it is
    the least change of its kind. Returns its kind."""
    s = alt.setup
    assert used(alt.model, s) == alt.device_used_bytes, alt.text
    assert fits_comfortably(alt.device_used_bytes, alt.gpu_memory_bytes), alt.text  # HEADROOM free, never 0%
    shown, of = (float(x) for x in re.search(r"([\d.]+) of ([\d.]+) GiB", alt.text).groups())
    assert shown == pytest.approx(alt.device_used_bytes / GiB, abs=0.051), alt.text
    assert of == pytest.approx(alt.gpu_memory_bytes / GiB, abs=0.051), alt.text
    assert f"({1 - alt.device_used_bytes / alt.gpu_memory_bytes:.0%} free)" in alt.text
    assert alt.trainable == why_not_trainable(s)
    assert (alt.trainable is None) == (s.offload == "none"), alt.text  # offload is the one thing it cannot run
    assert alt.line.endswith(f"The app cannot train this: {alt.trainable}.") if alt.trainable else alt.line == alt.text
    assert (s.batch_size, s.grad_checkpointing, s.modules_to_save) == (1, True, ())  # the leanest
    if s.sharding == "fsdp":
        n = s.num_gpus
        assert (alt.model, alt.gpu_name, alt.gpu_memory_bytes) == (model_id, gpu.name, gpu.memory_bytes)
        assert alt.text.startswith(f"{n} x {gpu.name} with FSDP" if n > 1 else f"one {gpu.name} with CPU offload")
        offloads = ("none",) if s.offload == "none" else ("optimizer", "params")
        counts = _GPU_COUNTS if s.offload == "none" else (1, *_GPU_COUNTS)
        # the fewest GPUs: the next smaller count tried fits comfortably with none of the offloads
        if counts.index(n) > 0:
            fewer = counts[counts.index(n) - 1]
            assert not any(_comfortable(model_id, replace(s, num_gpus=fewer, offload=o), gpu.memory_bytes)
                           for o in offloads), alt.text
        return "fsdp" if s.offload == "none" else "offload"
    assert (s.num_gpus, s.sharding, s.offload) == (1, "none", "none")
    if alt.gpu_name != gpu.name:
        spec = find_gpu(alt.gpu_name)
        assert alt.text.startswith(f"a single {spec.name} ({spec.datasheet_gb:g} GB datasheet")
        assert alt.gpu_memory_bytes == spec.memory_bytes > gpu.memory_bytes, alt.text
        assert (s.method, s.quant, alt.model) == ("qlora", "nf4", model_id)
        # the smallest catalog GPU that holds it with headroom
        assert not any(fits_comfortably(alt.device_used_bytes, g.memory_bytes)
                       for g in gpu_catalog().values() if g.memory_bytes < spec.memory_bytes)
        return "bigger"
    assert alt.gpu_memory_bytes == gpu.memory_bytes
    if alt.model != model_id:
        assert model(alt.model).total_params < model(model_id).total_params, alt.text
        assert alt.text.startswith(f"a smaller model of the same family, {alt.model}")
        return "smaller"
    assert s.seq_len < base.seq_len and (s.method, s.quant) == ("qlora", "nf4"), alt.text
    assert f"up to {s.seq_len:,} tokens" in alt.text
    assert not _comfortable(model_id, replace(s, seq_len=s.seq_len + 1), gpu.memory_bytes)
    return "shorter"


# ------------------------------------------------------------------ representative cases


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-2-7b-hf"])
def test_8b_on_24gb_gets_lora_with_checkpointing_and_headroom(model_id):
    gpu = target("RTX 4090")
    assert gpu.memory_bytes == 24564 * MiB  # what nvidia-smi reports for a "24 GB" card
    rec = recommend(model(model_id), TrainSetup(), gpu)
    best = rec.best
    assert best is not None, rec.explanation
    assert (best.setup.method, best.setup.quant) == ("lora", None)
    assert best.setup.grad_checkpointing
    assert best.fits
    assert best.headroom_bytes >= HEADROOM * gpu.memory_bytes
    assert rec.alternatives == ()  # something fits: nothing to change
    # the explanation gives the deciding numbers in GiB
    assert "GiB" in rec.explanation and "GB " not in rec.explanation
    assert f"{best.device_used_bytes / GiB:.1f}" in rec.explanation
    assert fmt_gib(gpu.memory_bytes / GiB) in rec.explanation  # 23.99 GiB: the summary's own spelling
    assert "LoRA" in rec.explanation


def test_70b_on_4090_fits_nowhere_and_suggests_fsdp_and_a_bigger_gpu():
    model_id = "meta-llama/Llama-2-70b-hf"
    base = TrainSetup()
    gpu = target("RTX 4090")
    rec = recommend(model(model_id), base, gpu)
    assert rec.recommended is None and rec.best is None
    assert not any(o.fits for o in rec.options)
    assert "Nothing fits" in rec.explanation and "GiB" in rec.explanation
    texts = [a.text for a in rec.alternatives]
    assert any("x RTX 4090 with FSDP" in t and "QLoRA" in t for t in texts), texts
    assert any(t.startswith("a single ") for t in texts), texts
    kinds = [check_alternative(model_id, base, gpu, a) for a in rec.alternatives]
    assert {"fsdp", "offload", "bigger", "smaller"} <= set(kinds)


@pytest.mark.parametrize("gpu_name", ["A100 80GB SXM", "H100 SXM"])
def test_mixtral_8x22b_on_80gb(gpu_name):
    model_id = "mistralai/Mixtral-8x22B-v0.1"
    base = TrainSetup()
    gpu = target(gpu_name)
    assert 79.5 * GiB < gpu.memory_bytes <= 80 * GiB  # "80 GB": 81,920 MiB (A100), 81,559 MiB (H100)
    rec = recommend(model(model_id), base, gpu)
    if rec.best is not None:
        assert (rec.best.setup.method, rec.best.setup.quant) == ("qlora", "nf4"), rec.explanation
        assert rec.best.fits
    else:
        fsdp = [a for a in rec.alternatives if re.match(rf"\d+ x {re.escape(gpu.name)} with FSDP", a.text)]
        assert fsdp, [a.text for a in rec.alternatives]
        for a in rec.alternatives:
            check_alternative(model_id, base, gpu, a)


def test_max_quality_picks_full_for_a_small_model():
    gpu = target("H100 SXM")
    spec = model("Qwen/Qwen2.5-0.5B")
    best = recommend(spec, TrainSetup(), gpu, max_quality=True).best
    assert best is not None and best.setup.method == "full" and best.fits
    rec = recommend(spec, TrainSetup(), gpu)
    assert rec.best is not None and rec.best.setup.method == "lora"
    assert "maximum quality" in rec.explanation  # full fits too: say how to get it


@pytest.mark.parametrize("model_id, gpu_name", [
    ("meta-llama/Llama-3.1-8B", "RTX 4090"),
    ("meta-llama/Llama-2-7b-hf", "RTX 3060 12GB"),
    ("mistralai/Mixtral-8x7B-v0.1", "A100 80GB SXM"),
])
def test_recommended_is_the_fastest_of_its_method_with_headroom(model_id, gpu_name):
    gpu = target(gpu_name)
    rec = recommend(model(model_id), TrainSetup(), gpu, alternatives=False)
    best = rec.best
    assert best is not None and best.fits
    same = [o for o in rec.options if (o.setup.method, o.setup.quant) == (best.setup.method, best.setup.quant)
            and o.headroom_bytes >= HEADROOM * gpu.memory_bytes]
    if best.headroom_bytes >= HEADROOM * gpu.memory_bytes:
        assert best.tokens_per_second == max(o.tokens_per_second for o in same)


# ------------------------------------------------------------------ the search grid

GRID_CASES = [
    ("meta-llama/Llama-3.1-8B", "RTX 4090", 1, TrainSetup()),
    ("Qwen/Qwen2.5-0.5B", "H100 SXM", 1, TrainSetup()),
    ("mistralai/Mixtral-8x7B-v0.1", "A100 80GB SXM", 1, TrainSetup(seq_len=1024)),
    ("meta-llama/Llama-2-13b-hf", "RTX 3060 12GB", 1, TrainSetup(batch_size=3)),
    ("meta-llama/Llama-2-70b-hf", "A100 80GB SXM", 2, TrainSetup(sharding="fsdp")),
]


@cache
def grid(i: int):
    model_id, gpu_name, count, base = GRID_CASES[i]
    return model_id, target(gpu_name, count), base, search(model(model_id), base, target(gpu_name, count))


@pytest.mark.parametrize("i", range(len(GRID_CASES)), ids=[f"{m}-{g}-x{c}" for m, g, c, _ in GRID_CASES])
def test_options_are_the_full_product(i):
    _, gpu, base, options = grid(i)
    batches = sorted(set(BATCHES) | {base.batch_size})
    want = {(m, q, ck, opt, b) for (m, q), ck, opt, b in product(METHODS, (True, False), OPTIMIZERS, batches)}
    got = [(o.setup.method, o.setup.quant, o.setup.grad_checkpointing, o.setup.optimizer, o.setup.batch_size)
           for o in options]
    assert len(got) == len(want) == len(METHODS) * 2 * len(OPTIMIZERS) * len(batches)
    assert set(got) == want
    for o in options:
        assert o.setup.num_gpus == gpu.count
        assert o.setup.seq_len == base.seq_len
        assert o.fits == (o.device_used_bytes <= gpu.memory_bytes)
        assert o.headroom_bytes == gpu.memory_bytes - o.device_used_bytes
        assert o.peak_allocated_bytes <= o.device_used_bytes


@pytest.mark.parametrize("i", range(len(GRID_CASES)), ids=[f"{m}-{g}-x{c}" for m, g, c, _ in GRID_CASES])
def test_max_batch_size_is_the_real_limit(i):
    model_id, gpu, _, options = grid(i)
    mem = gpu.memory_bytes
    for o in options:
        mb = o.max_batch_size
        if mb == 0:
            assert used(model_id, replace(o.setup, batch_size=1)) > mem
        else:
            assert used(model_id, replace(o.setup, batch_size=mb)) <= mem
            assert used(model_id, replace(o.setup, batch_size=mb + 1)) > mem
        assert o.fits == (o.setup.batch_size <= mb)


@pytest.mark.parametrize("i", range(len(GRID_CASES)), ids=[f"{m}-{g}-x{c}" for m, g, c, _ in GRID_CASES])
def test_max_seq_len_is_the_real_limit(i):
    model_id, gpu, _, options = grid(i)
    mem = gpu.memory_bytes
    limit = model(model_id).arch.max_position_embeddings
    below_limit = 0
    for o in options:
        ms = o.max_seq_len
        assert ms <= limit
        if ms == 0:
            assert used(model_id, replace(o.setup, seq_len=1)) > mem
            continue
        assert used(model_id, replace(o.setup, seq_len=ms)) <= mem
        if ms < limit:
            below_limit += 1
            assert used(model_id, replace(o.setup, seq_len=ms + 1)) > mem
        if o.setup.seq_len <= limit:
            assert o.fits == (o.setup.seq_len <= ms)
    assert below_limit > 0  # the +1 check ran


# ------------------------------------------------------------------ properties over memory

PROPERTY_MODELS = ["Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "meta-llama/Llama-2-7b-hf",
                   "mistralai/Mistral-7B-v0.1", "meta-llama/Llama-3.1-8B"]
_RANK = {None: 0, ("qlora", "nf4"): 1, ("qlora", "int8"): 2, ("lora", None): 3, ("full", None): 4}
_FAMILY = {None: 0, ("qlora", "nf4"): 1, ("qlora", "int8"): 1, ("lora", None): 2, ("full", None): 3}


def _choice(model_id: str, gib: float, max_quality: bool):
    rec = recommend(model(model_id), TrainSetup(), custom(gib), max_quality=max_quality, alternatives=False)
    best = rec.best
    key = None if best is None else (best.setup.method, best.setup.quant)
    if not max_quality:
        assert key != ("full", None)
    return key


memories = st.floats(min_value=8, max_value=200, allow_nan=False)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(PROPERTY_MODELS), memories, memories, st.booleans())
def test_more_memory_never_loses_the_method_family(model_id, a, b, max_quality):
    """none < QLoRA (either base) < LoRA < full: more memory never moves down this order."""
    lo, hi = sorted((a, b))
    small, big = _choice(model_id, lo, max_quality), _choice(model_id, hi, max_quality)
    assert _FAMILY[big] >= _FAMILY[small], (lo, small, hi, big)


def _standing(model_id: str, gib: float, max_quality: bool) -> int:
    """Position of the pick in recommend's documented preference (higher is better): a
    comfortable fit (10% headroom) of any adapter method beats a tight fit of a better one."""
    from planner.recommend import HEADROOM, preference

    gpu = custom(gib)
    rec = recommend(model(model_id), TrainSetup(), gpu, max_quality=max_quality, alternatives=False)
    if rec.best is None:
        return -1
    order = preference(max_quality)
    s = rec.best.setup
    comfortable = rec.best.headroom_bytes >= HEADROOM * gpu.memory_bytes
    for position, (method, quant, room) in enumerate(order):
        if (s.method, s.quant) == (method, quant) and (comfortable or room == 0.0):
            return len(order) - position
    raise AssertionError(f"pick {s.method}/{s.quant} is not in the preference order")


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(PROPERTY_MODELS), memories, memories, st.booleans())
@example("Qwen/Qwen2.5-1.5B", 9.4, 9.8, False)
def test_more_memory_never_makes_the_recommendation_worse(model_id, a, b, max_quality):
    """Along recommend's preference: full (max_quality) > comfortable LoRA > comfortable QLoRA
    8-bit > comfortable QLoRA 4-bit > tight LoRA > tight 8-bit > tight 4-bit > nothing."""
    lo, hi = sorted((a, b))
    assert _standing(model_id, hi, max_quality) >= _standing(model_id, lo, max_quality), (lo, hi)


def test_something_is_recommended_whenever_an_option_fits():
    rec = recommend(model("Qwen/Qwen2.5-0.5B"), TrainSetup(), custom(7.1), alternatives=False)
    fitting = [o for o in rec.options if o.fits]
    assert fitting and "lora" in {o.setup.method for o in fitting}
    assert rec.recommended is not None, rec.explanation


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(PROPERTY_MODELS), memories, st.booleans())
def test_recommended_option_always_fits(model_id, gib, max_quality):
    gpu = custom(gib)
    rec = recommend(model(model_id), TrainSetup(), gpu, max_quality=max_quality, alternatives=False)
    if rec.best is not None:
        assert rec.best.fits and rec.best.device_used_bytes <= gpu.memory_bytes
        assert rec.options[rec.recommended] is rec.best


# ------------------------------------------------------------------ speed


def test_recommend_is_fast():
    spec, gpu = model("meta-llama/Llama-3.1-8B"), target("RTX 4090")
    recommend(spec, TrainSetup(), gpu, alternatives=False)  # warm caches
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rec = recommend(spec, TrainSetup(), gpu, alternatives=False)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"\nrecommend(Llama-3.1-8B, RTX 4090): {len(rec.options)} options, median {median * 1000:.0f} ms "
          f"(target < 200 ms)")
    assert len(rec.options) == len(METHODS) * 2 * len(OPTIMIZERS) * len(BATCHES)
    assert median < 0.6


def test_more_gpus_means_the_fewest_that_fit():
    """FSDP shards over any count: 70B QLoRA on 4090s needs 3 (with the headroom the recommendation
    asks for), and 2 really do not fit. The count is the planned setup's, not parsed from the text."""
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
    base = TrainSetup(seq_len=4096) if gpu_name == "T4" else TrainSetup()
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


def test_the_recommendation_says_its_warnings_first():
    """Issue 13 point 3: a plan whose own estimate warns (here: far beyond the model's context), or
    that the app's trainer cannot run, says so with the recommendation, in JSON and in words."""
    from planner.recommend_text import recommendation_lines

    model = resolve_model("meta-llama/Llama-2-7b-hf")  # 4,096 positions
    gpu = GpuTarget("H200", find_gpu("H200").memory_bytes, 1, "catalog", find_gpu("H200"))
    rec = recommend(model, TrainSetup(seq_len=8192), gpu, alternatives=False)
    assert rec.best is not None and any("exceeds the model's context" in w for w in rec.warnings)
    assert rec.to_json()["explanation"].startswith(f"Warning: {rec.warnings[0]}.")
    lines = recommendation_lines(rec)
    assert lines[1].startswith("warning: ") and lines.index(rec.explanation) > 1
    quiet = recommend(model, TrainSetup(seq_len=2048), gpu, alternatives=False)
    assert quiet.warnings == ()
    sharded = GpuTarget("H200", find_gpu("H200").memory_bytes, 2, "catalog", find_gpu("H200"))
    zero2 = recommend(model, TrainSetup(seq_len=2048, num_gpus=2, sharding="zero2"), sharded, alternatives=False)
    assert any("trainer cannot run" in w for w in zero2.warnings)
