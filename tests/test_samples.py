"""A data set's example lengths (planner/samples.py) and what padding and packing make of them in
the time model (planner/cost.py as_run; issue 19: packing changes the terms it really changes)."""

import random
import statistics
from dataclasses import replace

import pytest

from planner.batch_shape import as_run, longest_run
from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cost import run_cost
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup
from planner.padding import padding_note
from planner.samples import SampleLengths

LLAMA8 = resolve_model("meta-llama/Llama-3.1-8B")
A100 = find_gpu("A100 80GB SXM")


def _lognormal(n: int = 20_000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(4, int(rng.lognormvariate(5.5, 0.8))) for _ in range(n)]


LENGTHS = _lognormal()
SUMMARY = SampleLengths.of(LENGTHS)


def test_the_summary_keeps_count_total_and_the_extremes():
    assert SUMMARY.count == len(LENGTHS) and SUMMARY.total == sum(LENGTHS)
    assert SUMMARY.quantiles[0] == min(LENGTHS) and SUMMARY.longest == max(LENGTHS)
    assert SUMMARY.mean(10**6) == pytest.approx(statistics.mean(LENGTHS))


@pytest.mark.parametrize("batch", [1, 2, 4, 8, 16, 64])
@pytest.mark.parametrize("cap", [256, 2048])
def test_the_padded_length_is_the_longest_of_a_shuffled_micro_batch(batch, cap):
    # what a shuffled loader does: draw micro-batches, pad each to its longest (cut to the cap)
    rng = random.Random(batch * cap)
    drawn = [max(min(x, cap) for x in rng.sample(LENGTHS, batch)) for _ in range(4000)]
    assert SUMMARY.padded(batch, cap) == pytest.approx(statistics.mean(drawn), rel=0.03)


def test_one_example_is_never_padded_and_more_are_padded_more():
    assert SUMMARY.padded(1, 2048) == pytest.approx(SUMMARY.mean(2048), rel=1e-3)
    padded = [SUMMARY.padded(b, 2048) for b in (1, 2, 4, 8, 16)]
    assert padded == sorted(padded) and padded[-1] <= 2048
    assert SUMMARY.mean(256) == pytest.approx(statistics.mean(min(x, 256) for x in LENGTHS), rel=2e-3)
    assert SUMMARY.tokens(256) == pytest.approx(sum(min(x, 256) for x in LENGTHS), rel=2e-3)


@pytest.mark.parametrize("quantiles", [(), (5,), (0, 4), (9, 3)])
def test_malformed_summaries_are_refused_in_one_line(quantiles):
    with pytest.raises(PlannerError):
        SampleLengths(10, 100, quantiles)
    with pytest.raises(PlannerError, match="no example"):
        SampleLengths.of([])


def test_unpacked_micro_batches_run_at_their_padded_length_and_count_only_data():
    setup = TrainSetup(batch_size=8, seq_len=2048, lengths=SUMMARY)
    ran, share = as_run(setup)
    assert ran.seq_len == round(SUMMARY.padded(8, 2048)) and ran.lengths is SUMMARY
    assert share == pytest.approx(SUMMARY.mean(2048) / ran.seq_len)
    assert as_run(replace(setup, packing=True)) == (replace(setup, packing=True), 1.0)
    assert as_run(replace(setup, lengths=None)) == (replace(setup, lengths=None), 1.0)
    # throughput is the padded step's data: the same micro-batch shape, times the data's share
    unpacked = run_cost(LLAMA8.arch, setup, A100)
    shaped = run_cost(LLAMA8.arch, replace(ran, lengths=None), A100)
    assert unpacked.tokens_per_second == pytest.approx(shaped.tokens_per_second * share, rel=1e-9)
    assert unpacked.step == shaped.step


def test_packing_wins_what_padding_loses_and_examples_that_fill_seq_len_change_nothing():
    def tps(**kw):
        return run_cost(LLAMA8.arch, TrainSetup(seq_len=2048, **kw), A100).tokens_per_second

    plain = tps(batch_size=8)
    assert tps(batch_size=8, lengths=SUMMARY, packing=True) == plain  # every position is data
    assert tps(batch_size=8, lengths=SUMMARY) < 0.5 * plain  # ~850 positions a row for ~340 of data
    full_rows = SampleLengths.of([4096] * 100)  # every example cut to seq_len: nothing to pad
    assert tps(batch_size=8, lengths=full_rows) == pytest.approx(plain, rel=1e-9)


def test_the_recommendation_says_what_padding_costs_and_what_packing_would_give():
    setup = TrainSetup(batch_size=8, lengths=SUMMARY)
    speed = run_cost(LLAMA8.arch, setup, A100).tokens_per_second
    note = padding_note(LLAMA8.arch, setup, A100, speed)
    packed = run_cost(LLAMA8.arch, replace(setup, packing=True), A100).tokens_per_second
    assert f"padded to ~{as_run(setup)[0].seq_len:,} tokens" in note
    assert f"packing would train {packed / speed:.1f}x as fast" in note
    assert padding_note(LLAMA8.arch, replace(setup, batch_size=1), A100, speed) == ""  # one example: no padding
    assert padding_note(LLAMA8.arch, replace(setup, packing=True), A100, speed) == ""


def test_memory_is_planned_at_the_longest_micro_batch_the_data_makes():
    """Unpacked, no micro-batch is padded beyond the data's longest example: memory is planned
    there (cut at seq_len), and said; packed blocks are seq_len long whatever the data."""
    short = SampleLengths.of([100, 300, 700] * 50)
    setup = TrainSetup(batch_size=4, seq_len=2048, lengths=short)
    assert longest_run(setup) == replace(setup, seq_len=700)
    assert longest_run(replace(setup, packing=True)) == replace(setup, packing=True)
    assert longest_run(replace(setup, seq_len=512)) == replace(setup, seq_len=512)  # cut below the longest
    planned = estimate(LLAMA8, setup)
    at_longest = estimate(LLAMA8, replace(setup, seq_len=700, lengths=None))
    assert planned.peak_allocated_bytes == at_longest.peak_allocated_bytes < estimate(LLAMA8, replace(
        setup, lengths=None)).peak_allocated_bytes
    assert any("longest example is 700 tokens" in a and "--seq-len 2,048" in a for a in planned.assumptions)
    assert estimate(LLAMA8, replace(setup, packing=True)).peak_allocated_bytes == estimate(
        LLAMA8, replace(setup, lengths=None)).peak_allocated_bytes


def test_the_recommendation_fits_more_with_short_data_and_keeps_the_longest_cut_that_fits():
    from planner.recommend import recommend
    from planner.targets import GpuTarget

    gpu = find_gpu("RTX 4090")
    target = GpuTarget(gpu.name, gpu.memory_bytes, 1, "catalog", gpu)
    short = SampleLengths.of([200, 400, 600] * 100)
    plain = recommend(LLAMA8, TrainSetup(seq_len=4096), target, alternatives=False)
    data = recommend(LLAMA8, TrainSetup(seq_len=4096, lengths=short), target, alternatives=False)
    # 4,096-token examples need the chunked loss for LoRA on 24 GiB; these, never longer than 600, do not
    assert (plain.best.setup.method, plain.best.setup.loss) == ("lora", "chunked")
    assert (data.best.setup.method, data.best.setup.loss) == ("lora", "standard")
    lora = recommend(LLAMA8, TrainSetup(seq_len=2048), target, alternatives=False).best
    assert lora.setup.loss == "standard" and data.best.max_seq_len == lora.max_seq_len  # the longest cut that fits
    assert data.best.max_batch_size > lora.max_batch_size  # 600-token micro-batches, not 2,048
    assert "longest example is 600 tokens" in " ".join(estimate(LLAMA8, data.best.setup).assumptions)
