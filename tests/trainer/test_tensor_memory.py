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
    # the demo pads each batch to its longest sample (no packing): the run is predicted at the
    # data's longest example (below max_seq_len 64), the peak step's shape again, and the
    # CPU-device prediction for it holds within 5%
    assert end["peak_batch_size"] == 8 and 5 < end["peak_seq_len"] < 64
    assert end["predicted_at_peak_bytes"] <= start["predicted_peak_bytes"]
    from trainer.config import TrainConfig
    from trainer.prediction import predict

    cfg = TrainConfig.load(run_dir / "config.json")
    assert start["predicted_peak_bytes"] < predict(cfg, "fp32", "cpu")[2].peak_allocated_bytes  # not at 64
    assert end["peak_ratio"] == pytest.approx(end["peak_alloc_bytes"] / end["predicted_at_peak_bytes"], abs=1e-4)
    assert end["peak_ratio"] == pytest.approx(1, abs=0.05)
    summary = json.loads((run_dir / "run.json").read_text())
    keys = ("peak_alloc_bytes", "peak_alloc_phase", "peak_ratio", "peak_batch_size", "peak_seq_len",
            "predicted_at_peak_bytes")
    assert {k: summary[k] for k in keys} == {k: end[k] for k in keys}


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


def test_a_cpu_run_reports_per_phase_peaks_under_a_running_peak(demo_dir, tmp_path):
    """Issue 16 point 2: step events carry a running peak (never falling), and the end event's
    per-phase peaks are all there, the largest of them being the run's peak."""
    import torch

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, max_steps=4, save_steps=0))
    assert code == 0, events[-3:]
    peaks = [s["peak_alloc_bytes"] for s in steps(events)]
    assert len(peaks) == 4 and all(b >= a for a, b in zip(peaks, peaks[1:]))
    assert all("device_used_bytes" not in s for s in steps(events))  # NVML's figure is CUDA's
    end = events[-1]
    phases = [end[k] for k in ("peak_forward_bytes", "peak_backward_bytes", "peak_optimizer_bytes")]
    assert all(isinstance(p, int) and p > 0 for p in phases), phases
    assert max(phases) == end["peak_alloc_bytes"] == peaks[-1]
    summary = json.loads((run_dir / "run.json").read_text())
    assert [summary[k] for k in ("peak_forward_bytes", "peak_backward_bytes", "peak_optimizer_bytes")] == phases


class FakeCuda:
    """torch.cuda's peak statistics, by hand: what the CUDA probe reads and resets."""

    def __init__(self) -> None:
        self.now = self.peak = self.reserved_now = self.reserved_peak = 0
        self.resets = 0

    def alloc(self, n: int) -> None:
        self.now += n
        self.peak = max(self.peak, self.now)
        self.reserved_now = max(self.reserved_now, self.now + 10)  # the caching allocator keeps blocks
        self.reserved_peak = max(self.reserved_peak, self.reserved_now)

    def free(self, n: int) -> None:
        self.now -= n

    def max_memory_allocated(self) -> int:
        return self.peak

    def max_memory_reserved(self) -> int:
        return self.reserved_peak

    def reset_peak_memory_stats(self) -> None:
        self.peak, self.reserved_peak = self.now, self.reserved_now
        self.resets += 1


class FakeTrainer:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.callbacks: list = []

    def compute_loss(self, activations: int) -> int:
        self.cuda.alloc(activations)
        return activations

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)


def _step(tracker, trainer: FakeTrainer, cuda: FakeCuda, step: int, activations: int, grads: int, state: int) -> None:
    from types import SimpleNamespace

    st = SimpleNamespace(global_step=step - 1)
    tracker.on_step_begin(None, st, None, model=object(), optimizer=None)
    trainer.compute_loss(activations)  # forward: the wrapped compute_loss
    cuda.alloc(grads)  # backward: gradients appear, activations go
    cuda.free(activations)
    tracker.on_pre_optimizer_step(None, st, None)
    cuda.alloc(state)  # optimizer step: a temporary
    cuda.free(state)
    cuda.free(grads)
    tracker.on_step_end(None, st, None)


def test_the_cuda_probe_keeps_the_run_peak_across_its_resets():
    """On CUDA the tracker resets torch's peak counters at each phase boundary and keeps its own
    running maxima: per phase, outside steps (loading), reserved, and the run's peak as
    max_memory_allocated would have reported it without any reset."""
    from trainer.tensor_memory import OUTSIDE, CudaProbe, PhaseTracker

    cuda = FakeCuda()
    cuda.alloc(1000)  # the weights, loaded before the first step
    cuda.alloc(500)  # a loading temporary
    cuda.free(500)
    tracker = PhaseTracker(CudaProbe(cuda))
    trainer = FakeTrainer(cuda)
    tracker.attach(trainer)
    assert trainer.callbacks == [tracker]
    _step(tracker, trainer, cuda, 1, activations=300, grads=100, state=50)
    assert cuda.resets == 4  # before the step, after forward, after backward, at its end
    assert tracker.peaks == {"forward": 1300, "backward": 1400, "optimizer step": 1150, OUTSIDE: 1500}
    assert tracker.peak_bytes() == 1500 and tracker.peak.phase == OUTSIDE  # loading's spike wins
    _step(tracker, trainer, cuda, 2, activations=700, grads=100, state=50)
    assert tracker.peaks["backward"] == 1800 and tracker.peak_bytes() == 1800
    assert tracker.peak.phase == "backward"
    assert tracker.reserved_bytes() == 1810
    assert tracker.phase_bytes() == {"peak_forward_bytes": 1700, "peak_backward_bytes": 1800,
                                     "peak_optimizer_bytes": 1150}
    # between steps (a checkpoint's save): in the running peak at once, and folded by settle()
    cuda.alloc(2000)
    cuda.free(2000)
    assert tracker.peak_bytes() == 3000
    tracker.settle()
    assert tracker.peaks[OUTSIDE] == 3000 and tracker.peak.phase == OUTSIDE


def test_evaluation_outside_a_step_marks_no_phase():
    from types import SimpleNamespace

    from trainer.tensor_memory import OUTSIDE, CudaProbe, PhaseTracker

    cuda = FakeCuda()
    tracker = PhaseTracker(CudaProbe(cuda))
    trainer = FakeTrainer(cuda)
    tracker.attach(trainer)
    trainer.compute_loss(40)  # an evaluation's loss, between steps
    assert tracker.peaks["forward"] == 0
    tracker.on_step_end(None, SimpleNamespace(global_step=0), None)  # no step begun: nothing to close
    tracker.settle()
    assert tracker.peaks[OUTSIDE] == 40 and tracker.phase_bytes()["peak_forward_bytes"] is None


def test_nvml_reads_are_sampled_when_slow():
    from trainer.measure import DeviceMemory, same_gpu

    ticks = iter([0.0, 0.0001, 1.0, 1.002] + [5.0, 5.0] * 20)
    values = iter(range(100, 200))
    used = DeviceMemory(lambda: next(values), clock=lambda: next(ticks))
    assert used() == 100 and used.every == 1  # 0.1 ms: every logging step
    assert used() == 101 and used.every == DeviceMemory.EVERY_WHEN_SLOW  # 2 ms: from now on one in 10
    assert [used() for _ in range(8)] == [101] * 8
    assert used() == 102 and used.peak == 102
    assert DeviceMemory(lambda: None)() is None
    assert same_gpu("6f0c1b52-1c3a-4e21-9d3f-0123456789ab", "GPU-6F0C1B52-1C3A-4E21-9D3F-0123456789AB")
    assert not same_gpu("6f0c1b52", "GPU-00000000") and not same_gpu(None, "GPU-1")


@pytest.mark.gpu
def test_a_cuda_run_keeps_its_running_peaks_across_the_phase_resets(demo_dir, tmp_path):
    """On a GPU: step events' peaks never fall although torch's counters are reset at every phase,
    the end event names the peak's phase, and the largest phase peak is at most the run's peak."""
    import torch

    from trainer.tensor_memory import OUTSIDE, PHASES

    run_dir = tmp_path / "run"
    code, events = run_inprocess(write_config(demo_dir, run_dir, max_steps=4, save_steps=0, device="cuda"))
    assert code == 0, events[-3:]
    for key in ("peak_alloc_bytes", "peak_reserved_bytes"):
        peaks = [s[key] for s in steps(events)]
        assert all(p > 0 for p in peaks) and peaks == sorted(peaks), key
    assert all("device_used_bytes" in s for s in steps(events))
    end = events[-1]
    assert end["peak_alloc_phase"] in (*PHASES, OUTSIDE)
    assert max(end[k] for k in ("peak_forward_bytes", "peak_backward_bytes", "peak_optimizer_bytes")) \
        <= end["peak_alloc_bytes"] <= end["peak_reserved_bytes"]
    assert end["peak_alloc_bytes"] >= torch.cuda.max_memory_allocated()  # torch's: since the last reset
