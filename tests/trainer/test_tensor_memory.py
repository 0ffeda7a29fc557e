"""A CPU run measures its live tensor memory (issue 16 point 1): the counterpart of
torch.cuda.max_memory_allocated, by precise mode's storage counter, on the steps
trainer/tensor_memory.py picks; step events carry the peak so far, the end event and run.json the
peak, its phase and its ratio to the prediction."""

from __future__ import annotations

import json

import pytest
from conftest import run_inprocess, steps, write_config

# trainer.tensor_memory imports transformers (and torch): inside the tests, never at collection


def test_the_first_steps_and_then_one_in_every_25_are_measured():
    from trainer.tensor_memory import EVERY, FIRST_STEPS, measured

    assert [s for s in range(1, 80) if measured(s)] == [*range(1, FIRST_STEPS + 1), 25, 50, 75]
    assert EVERY == 25


def test_a_cpu_run_reports_its_tensor_peak_phase_and_ratio(demo_dir, tmp_path):
    import torch

    from trainer.tensor_memory import PHASES

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, max_steps=4, save_steps=0))
    assert code == 0, events[-3:]
    peaks = [s["peak_alloc_bytes"] for s in steps(events)]
    assert all(p > 0 for p in peaks) and peaks == sorted(peaks)  # a running peak, like CUDA's
    end = events[-1]
    assert end["event"] == "end" and end["peak_alloc_bytes"] == peaks[-1]
    assert end["peak_alloc_phase"] in PHASES
    start = events[0]
    assert end["peak_ratio"] == pytest.approx(end["peak_alloc_bytes"] / start["predicted_peak_bytes"], abs=1e-4)
    summary = json.loads((run_dir / "run.json").read_text())
    assert {k: summary[k] for k in ("peak_alloc_bytes", "peak_alloc_phase", "peak_ratio")} == \
        {k: end[k] for k in ("peak_alloc_bytes", "peak_alloc_phase", "peak_ratio")}


def test_the_meter_counts_what_a_step_keeps_and_what_it_makes(demo_dir, tmp_path):
    """Against the model itself: the measured peak holds every weight, gradient and optimizer
    state byte, plus the step's activations (more than the persistent bytes alone)."""
    import io

    import torch

    from planner.simulate.meta import persistent_tensors
    from trainer.config import TrainConfig
    from trainer.run import Run
    from trainer.rundir import write_marker

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    cfg = TrainConfig.load(write_config(demo_dir, run_dir, max_steps=2, save_steps=0))
    run_dir.mkdir()
    write_marker(run_dir)  # as trainer.session claims it
    run = Run(cfg, run_dir, resume=False, stdin=io.StringIO(""), out=io.StringIO())
    try:
        run.setup()
        run.train()
        storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                    for ts in persistent_tensors(run.trainer.model, run.trainer.optimizer).values() for t in ts}
        kept = sum(storages.values())
        assert run.meter.peak.bytes > kept > 0
        assert run.meter.peak.bytes < 20 * kept  # the demo's activations are small beside its weights
    finally:
        run.close()
