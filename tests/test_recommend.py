"""planner/recommend.py: which method, optimizer and micro-batch on a GPU.

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
from recommendtools import check_alternative, custom, model, target, used

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.options import TrainSetup
from planner.recommend import BATCHES, HEADROOM, METHODS, OPTIMIZERS, SPEED_TIE, recommend, search
from planner.targets import GpuTarget
from planner.units import GiB, MiB, fmt_gib

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
        fastest = max(o.tokens_per_second for o in same)
        assert best.tokens_per_second >= (1 - SPEED_TIE) * fastest
        # within the tie, the first one found: the plain optimizer and the smallest micro-batch
        assert best is next(o for o in same if o.tokens_per_second >= (1 - SPEED_TIE) * fastest)


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


def test_the_explanation_sets_the_other_adapters_beside_the_chosen_one_in_numbers():
    """Issue 18 point 4: every other adapter on the pick's base, in the estimator's and the time
    model's numbers (memory, speed against the pick, parameters trained), prefix tuning without
    checkpointing."""
    from planner.cost import run_cost
    from planner.memory import estimate
    from planner.units import fmt_count

    spec, gpu = resolve_model("meta-llama/Llama-3.1-8B"), target("RTX 4090")
    rec = recommend(spec, TrainSetup(), gpu)
    chosen = rec.options[rec.recommended]
    assert chosen.setup.method in ("lora", "qlora") and not chosen.setup.use_dora
    for change, label in ((dict(use_dora=True), "DoRA r=16"), (dict(peft="ia3"), "IA3"),
                          (dict(peft="prompt", modules_to_save=()), "prompt tuning 20 tokens")):
        other = replace(chosen.setup, **change)
        e = estimate(spec, other)
        speed = run_cost(spec.arch, other, gpu.spec).tokens_per_second
        assert (f"{label} {e.device_used_bytes / 2**30:.1f} GiB, ~{speed:,.0f} tokens/s "
                f"({speed / chosen.tokens_per_second - 1:+.0%}), {fmt_count(e.params_trainable)} trained"
                ) in rec.explanation
    assert "prefix tuning 20 tokens (checkpointing off)" in rec.explanation
    assert "AdaLoRA r=24->16" in rec.explanation


@pytest.mark.parametrize(("peft", "label"), [
    ("prompt", "prompt tuning 20 tokens"), ("prefix", "prefix tuning 20 tokens"), ("ia3", "IA3")])
def test_any_adapter_is_recommended_under_its_own_name(peft, label):
    """A plan for another adapter searches its bases (full fine-tuning drops the adapter); prefix
    tuning only without checkpointing, and the savers it cannot take are skipped."""
    spec, gpu = resolve_model("meta-llama/Llama-3.1-8B"), target("RTX 4090")
    rec = recommend(spec, TrainSetup(peft=peft, modules_to_save=(), grad_checkpointing=peft != "prefix"), gpu)
    assert rec.best is not None and rec.explanation.startswith(label)
    adapters = [o.setup for o in rec.options if o.setup.method != "full"]
    assert adapters and {s.peft for s in adapters} == {peft}
    assert {o.setup.peft for o in rec.options if o.setup.method == "full"} <= {"lora"}
    if peft == "prefix":
        assert not any(s.grad_checkpointing or s.offload_activations for s in adapters)
