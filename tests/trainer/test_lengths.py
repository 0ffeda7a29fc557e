"""``python -m trainer lengths`` and the padding it predicts, checked against the run's own loader:
the trainer's data preparation and collator behind a shuffled sampler, as the Trainer batches them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from planner.batch_shape import as_run
from planner.errors import PlannerError
from planner.lengths import measure_lengths
from planner.options import TrainSetup
from planner.samples import SampleLengths
from trainer.config import TrainConfig
from trainer.data import collate, prepare_data, usable_rows
from trainer.lengths import lengths_of
from trainer.loading import load_tokenizer


@pytest.fixture(scope="module")
def varied(demo_dir, varied_data):
    cfg = TrainConfig(model=str(demo_dir / "model"), dataset=str(varied_data), max_seq_len=4096)
    return cfg, load_tokenizer(cfg)


def test_the_command_prints_the_lengths_the_run_tokenizes(varied):
    cfg, tok = varied
    done = subprocess.run([sys.executable, "-m", "trainer", "lengths", "--model", cfg.model, "--data", cfg.dataset],
                          capture_output=True, text=True, timeout=300, check=True)
    printed = SampleLengths(**{k: tuple(v) if k == "quantiles" else v for k, v in json.loads(done.stdout).items()})
    assert printed == SampleLengths.of([len(ids) for ids, _ in usable_rows(cfg, tok)]) == lengths_of(cfg, tok)
    assert printed.count == 600 and printed.longest > 5 * printed.quantiles[500]  # a long tail to pad to


def test_the_planner_measures_through_the_trainer_once_per_file(varied):
    cfg, tok = varied
    first = measure_lengths(cfg.model, cfg.dataset)
    assert first == lengths_of(cfg, tok)
    assert measure_lengths(cfg.model, cfg.dataset) is first  # the same file, unchanged: no second tokenization
    with pytest.raises(PlannerError, match="no such file"):
        measure_lengths(cfg.model, cfg.dataset + ".missing")
    with pytest.raises(PlannerError, match="^--data: .*not a model folder"):
        measure_lengths(cfg.model + "-missing/", cfg.dataset)


@pytest.mark.parametrize("batch, cap", [(4, 4096), (8, 4096), (8, 128)])
def test_the_loader_pads_each_micro_batch_as_planned(varied, batch, cap):
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    cfg, tok = varied
    cfg = replace(cfg, max_seq_len=cap)
    train = prepare_data(cfg, tok).train
    shuffled = RandomSampler(train, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(train, batch_size=batch, sampler=shuffled, collate_fn=collate(tok))
    widths, data = [], []
    for _ in range(10):  # epochs: ten shuffles of the same examples
        for b in loader:
            if len(b["input_ids"]) == batch:  # the last, short micro-batch of an epoch aside
                widths.append(b["input_ids"].shape[1])
                data.append(int(b["attention_mask"].sum()) / b["attention_mask"].numel())
    lengths = lengths_of(cfg, tok)
    assert lengths.padded(batch, cap) == pytest.approx(sum(widths) / len(widths), rel=0.04)
    _, share = as_run(TrainSetup(batch_size=batch, seq_len=cap, lengths=lengths))
    measured = sum(w * d for w, d in zip(widths, data)) / sum(widths)  # data positions over computed ones
    assert share == pytest.approx(measured, rel=0.05)
