"""One training run, in the boring shape of a torchtune recipe: setup, train, cleanup.

Exit codes: 0 the run ended as asked (completed, stopped or cancelled); 2 bad config, data or
model; 3 out of memory; 1 anything else (a bug: the traceback goes to stderr).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from planner.atomic import atomic_dir, atomic_write_text
from trainer.config import ConfigError, TrainConfig
from trainer.distributed import (
    follow,
    forget_inherited_launch,
    fsdp_on_cpu,
    full_weights,
    gather,
    peer_error,
    rank,
    report_peer_error,
    world_size,
)
from trainer.measure import device_budget, gpu_name, measured_peak
from trainer.protocol import EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_OOM, exit_code
from trainer.quiet import quiet, say
from trainer.rundir import COMMANDS_FILE, SUMMARY, claimed, latest_checkpoint


class Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool, stdin: TextIO | None, out: TextIO | None):
        from trainer.clock import runtime_before
        from trainer.events import Commands, EventSink, SilentSink

        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.t0 = time.monotonic()
        self.before_s = runtime_before(run_dir) if resume else 0.0
        """Seconds the earlier sessions of this run took (it resumes): the run's time adds up."""
        self.lead = rank() == 0
        """Rank 0 (or the only process): the one that speaks and writes the run's files."""
        self.sink = EventSink(run_dir / "metrics.jsonl", out=out, t0=self.t0) if self.lead else SilentSink()
        self.commands = Commands(stdin)
        self._following = threading.Event()
        if world_size() > 1 and self.lead:
            threading.Thread(target=follow, args=(run_dir / COMMANDS_FILE, self.commands.put, self._following),
                             daemon=True, name="commands-file").start()
        self.layout = contextlib.ExitStack()
        """Holds the model layout (planner/simulate/moe_layout.py) and the activation offloading
        hooks (planner/simulate/offload.py) from loading to the last save."""
        self.trainer: Any = None
        self.callback: Any = None
        self.runtime: Any = None
        self.predicted: int | None = None
        """Predicted peak allocated bytes on this run's device (a CPU run: live tensor bytes)."""
        self.predicted_more: dict[str, int | None] = {"predicted_reserved_bytes": None, "predicted_device_bytes": None}
        """The same prediction's reserved and device-used bytes (equal to allocated on the CPU)."""
        self.checkpoint: Path | None = None
        self.meter: Any = None
        """The run's per-phase peak tensor memory (trainer/tensor_memory.py): CUDA's counters or the
        CPU's own count; the run's peak allocated and reserved bytes are read from it, never from
        torch's counters (it resets them at every phase boundary)."""
        self.device_used: Any = None
        """NVML's used bytes of the run's GPU, sampled at logging steps (trainer/measure.py); None:
        the CPU, or no NVML."""

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
        self.layout.close()
        self._following.set()
        self.commands.close()
        self.sink.close()

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        from transformers import set_seed

        from trainer.arguments import training_args
        from trainer.callbacks import EventCallback
        from trainer.chunked_loss import trainer_class
        from trainer.data import collate, prepare_data
        from trainer.loading import load_model, load_tokenizer, model_layout, param_counts, resolve_runtime
        from trainer.prediction import predict

        cfg = self.cfg
        trainer_type = trainer_class(cfg)  # transformers' Trainer, or with the chunked loss
        # seeded before the model exists: LoRA's A matrices are initialised at random
        set_seed(cfg.seed)
        self.runtime = resolve_runtime(cfg)
        tokenizer = load_tokenizer(cfg)
        data = prepare_data(cfg, tokenizer)
        self.layout.enter_context(model_layout(cfg))
        if cfg.offload_activations:  # transformers' offload, through hooks that also run without a GPU
            from planner.simulate.offload import host_offload

            self.layout.enter_context(host_offload())
        steps_per_epoch = math.ceil(len(data.train) / (cfg.batch_size * cfg.gradient_accumulation_steps))
        max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * steps_per_epoch)
        model = load_model(cfg, self.runtime, max_steps)
        predicted = predict(cfg, self.runtime.precision, self.runtime.device, data.lengths)
        self.predicted = predicted[2].peak_allocated_bytes if predicted else None
        if predicted:
            self.predicted_more = {"predicted_reserved_bytes": predicted[2].peak_reserved_bytes,
                                   "predicted_device_bytes": predicted[2].device_used_bytes}
        # one process watches its folder every step; several would disagree on the step it vanished
        self.callback = EventCallback(self.sink, self.commands, self.runtime.device,
                                      watch=self.run_dir if world_size() == 1 else None, total_s=self.total_s)
        from trainer.plugins import plugin_callbacks

        # plugged-in callbacks run before the event callback: a command they send acts at this very step
        callbacks = plugin_callbacks(cfg, self.commands) + [self.callback]
        if cfg.peft == "adalora" and cfg.method != "full":
            from trainer.callbacks import RankBudget

            callbacks.insert(0, RankBudget())
        # with tqdm off, transformers prints every log dict to stdout: stdout is for events only
        from transformers.trainer_callback import PrinterCallback

        args = training_args(cfg, self.run_dir, self.runtime, has_eval=data.eval is not None)
        in_backward = None
        if cfg.optimizer_in_backward:
            from trainer.in_backward import optimizer_in_backward

            in_backward = optimizer_in_backward(args, model)
        self.trainer = trainer_type(
            model=model,
            args=args,
            optimizer_cls_and_kwargs=in_backward,
            train_dataset=data.train,
            eval_dataset=data.eval,
            data_collator=collate(tokenizer),
            callbacks=callbacks,
        )
        self.trainer.remove_callback(PrinterCallback)
        from trainer.tensor_memory import tracker

        # per-phase peaks: torch's counters on CUDA, the run's own count on the CPU
        self.meter = tracker(self.runtime.device)
        self.meter.attach(self.trainer)
        self.callback.meter = self.meter
        if self.runtime.device == "cuda":
            from trainer.measure import DeviceMemory, nvml_used

            read = nvml_used()
            if read is not None:
                self.device_used = DeviceMemory(read)
                self.callback.device_used = self.device_used
        if cfg.num_processes > 1 and cfg.sharding == "fsdp" and not self.trainer.is_fsdp_enabled:
            fsdp_on_cpu(self.trainer)
        # a resumed run killed before its first checkpoint starts over (and says so in `start`)
        self.checkpoint = latest_checkpoint(self.run_dir) if self.resume else None
        params_total, trainable = param_counts(model)
        self.sink.emit(
            "start", model=cfg.model, method=cfg.method, params_total=params_total,
            params_trainable=trainable, max_steps=max_steps, run_dir=str(self.run_dir),
            predicted_peak_bytes=self.predicted, **self.predicted_more, device=self.runtime.device,
            gpu=gpu_name(self.runtime.device), precision=self.runtime.precision,
            data_format=data.format, template=data.template, masking=data.masking, examples=data.n_examples,
            truncated=data.n_truncated, skipped=data.n_skipped, resumed=self.resume,
            resumed_from=str(self.checkpoint) if self.checkpoint else None, runtime_before_s=round(self.before_s, 2))

    # -- train ------------------------------------------------------------------------------
    def train(self) -> None:
        self.trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)

    # -- cleanup ----------------------------------------------------------------------------
    def finish(self) -> str:
        from trainer.faults import ensure_present

        status = self.callback.outcome
        state = self.trainer.state
        if self.lead:
            ensure_present(self.run_dir)
        if status == "completed":
            weights = full_weights(self.trainer.model) if self.trainer.is_fsdp_enabled else None
            if self.lead:
                final = self.run_dir / ("adapter" if self.cfg.method != "full" else "model")
                with atomic_dir(final, replace=True) as tmp:  # inside our own run directory
                    self.trainer.accelerator.unwrap_model(self.trainer.model).save_pretrained(
                        str(tmp), safe_serialization=True, state_dict=weights)
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        # the GPU that came closest to its limit is the one to compare with the prediction
        peak = max(gather(self.measured_peak()))
        times = self.times()  # run.json and the end event say the same
        memory = self.allocated_summary()
        self.write_summary(status, state.global_step, losses[-1] if losses else None, peak=peak, times=times,
                           memory=memory)
        self.sink.emit("end", status=status, steps=state.global_step, output_dir=str(self.run_dir), **times,
                       **memory)
        return status

    def allocated_summary(self) -> dict[str, Any]:
        """Measured peak allocated tensor bytes (CUDA's own count, or the CPU run's tensor meter),
        the phase it happened in, its ratio to the predicted peak allocated, the peak of each phase,
        and on CUDA the peak reserved bytes and NVML's largest used reading."""
        meter = self.meter  # attached by setup, which every finished run went through
        meter.settle()  # CUDA: the last step's save
        peak = meter.peak
        mine = (peak.bytes if peak else 0, peak.phase if peak else None, meter.reserved_bytes(), meter.phase_bytes(),
                meter.peak_shape)
        # the GPU that came closest to its limit, with its own phases
        alloc, phase, reserved, phases, shape = max(gather(mine), key=lambda figures: figures[0])
        from trainer.prediction import predicted_at

        compared = predicted_at(self.cfg, self.runtime.precision, self.runtime.device, shape, self.predicted)
        ratio = round(alloc / compared, 4) if alloc and compared else None
        summary = {"peak_alloc_bytes": alloc or None, "peak_alloc_phase": phase, "peak_ratio": ratio, **phases,
                   "peak_batch_size": shape[0] if shape else None, "peak_seq_len": shape[1] if shape else None,
                   "predicted_at_peak_bytes": compared}
        if self.runtime.device == "cuda":
            used = [u for u in gather(self.device_used.peak if self.device_used else None) if u is not None]
            summary.update(peak_reserved_bytes=reserved or None, peak_device_bytes=max(used) if used else None)
        return summary

    def measured_peak(self) -> int:
        """This process's peak: on CUDA the tracker's running peak allocated (torch's own counter
        is reset at every phase), on the CPU the process's peak RSS."""
        device = self.runtime.device if self.runtime else "cpu"
        if device == "cuda" and self.meter is not None:
            self.meter.settle()
            return int(self.meter.peak_bytes())
        return measured_peak(device)

    def write_summary(self, status: str, steps: int, final_loss: float | None, error: str | None = None,
                      peak: int | None = None, times: dict[str, float] | None = None,
                      memory: dict[str, Any] | None = None) -> None:
        """``peak``: the largest rank's measured peak (this process's own when not given); ``times``:
        :meth:`times`, taken now when not given."""
        if not self.lead or not claimed(self.run_dir):
            return  # the run directory is gone: writing would recreate a stray folder
        summary = {
            "status": status, "steps": steps, "final_loss": final_loss,
            "peak_measured_bytes": peak if peak is not None else self.measured_peak(),
            "peak_kind": "cuda_max_allocated" if self.runtime and self.runtime.device == "cuda" else "host_rss",
            "predicted_peak_bytes": self.predicted, **self.predicted_more, **(memory or {}), **(times or self.times()),
            "model": self.cfg.model, "method": self.cfg.method, "error": error,
        }
        try:
            atomic_write_text(self.run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        except OSError as exc:  # disk full: the error event already says what went wrong
            say(f"warning: could not write {self.run_dir / SUMMARY}: {exc.strerror or exc}")

    def elapsed(self) -> float:
        """This session's seconds."""
        return time.monotonic() - self.t0

    def total_s(self) -> float:
        """The run's seconds: every session so far, this one included."""
        return self.before_s + self.elapsed()

    def times(self) -> dict[str, float]:
        """``runtime_s``: the run's total (what run.json, the end event and the Runs page say);
        ``session_runtime_s``: this session's share."""
        return {"runtime_s": round(self.total_s(), 2), "session_runtime_s": round(self.elapsed(), 2)}

    def fail(self, kind: str, message: str, hint: str, **extra: Any) -> None:
        if not self.lead:
            report_peer_error(self.run_dir, {"type": kind, "message": message, "hint": hint, **extra})
            return
        self.sink.emit("error", type=kind, message=message, hint=hint, **extra)
        steps = self.trainer.state.global_step if self.trainer else 0
        times = self.times()
        self.write_summary("failed", steps, None, error=f"{kind}: {message}", times=times)
        self.sink.emit("end", status="failed", steps=steps, output_dir=str(self.run_dir), **times)


def main(config_path: str | None, resume_dir: str | None = None,
         stdin: TextIO | None = None, out: TextIO | None = None, worker: str | None = None) -> int:
    """``worker``: the run directory a torchrun worker trains in (``resume_dir`` then only says
    whether to resume); the launcher prepared it and holds its lock."""
    from trainer.clock import runtime_before
    from trainer.protocol import encode
    from trainer.rundir import PID_FILE, RunDirError, write_pid
    from trainer.session import AlreadyComplete, open_new, open_resume

    out = out or sys.stdout
    if worker:
        return _work(Path(worker), resume=bool(resume_dir), out=out)
    forget_inherited_launch()
    try:
        session = open_resume(resume_dir) if resume_dir else open_new(config_path)
    except AlreadyComplete as done:
        say(f"note: {done}")
        # the run's total as its sessions recorded it: this session added nothing
        out.write(encode("end", 0.0, status="completed", steps=done.steps, runtime_s=runtime_before(Path(resume_dir)),
                         session_runtime_s=0.0, output_dir=str(resume_dir),
                         note="already complete; nothing changed") + "\n")
        out.flush()
        return EXIT_OK
    except (ConfigError, RunDirError) as exc:
        # refused before anything was written: the event goes to stdout only
        hint = getattr(exc, "hint", "fix the run config")
        out.write(encode("error", 0.0, type="config", message=str(exc), hint=hint) + "\n")
        out.flush()
        say(f"error: {exc}")
        return EXIT_INPUT
    cfg, run_dir = session.cfg, session.run_dir
    try:
        # who is training this directory: lets the app re-attach after a restart, or call it orphaned
        write_pid(run_dir)
        try:
            if cfg.num_processes > 1:
                from trainer.launcher import launch

                return launch(run_dir, cfg.num_processes, session.resume, stdin, out)
            return _work(run_dir, session.resume, out, cfg=cfg, stdin=stdin)
        finally:
            (run_dir / PID_FILE).unlink(missing_ok=True)
    finally:
        session.lock.release()


def _work(run_dir: Path, resume: bool, out: TextIO, cfg: TrainConfig | None = None,
          stdin: TextIO | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with quiet(run_dir):  # library warnings and progress bars to debug.log; ours still to stderr
        run = Run(cfg or TrainConfig.load(run_dir / "config.json"), run_dir, resume, stdin, out)
        # Libraries print to stdout (warnings, progress); only the sink may write events there.
        real_stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            return _run(run)
        finally:
            sys.stdout = real_stdout
            run.close()


def _run(run: Run) -> int:
    from trainer.data import DataError
    from trainer.faults import io_fault, is_oom
    from trainer.loading import ModelError

    try:
        run.setup()
        run.train()
        run.finish()
        return EXIT_OK
    except (ConfigError, DataError, ModelError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "data" if isinstance(exc, DataError) else "model"
        say(f"error: {exc}")
        run.fail(kind, str(exc), "fix the " + {"config": "run config", "data": "dataset", "model": "model path"}[kind])
        return EXIT_INPUT
    except BaseException as exc:  # noqa: BLE001 - classify OOM and I/O, report everything else as internal
        if is_oom(exc):
            return _report_oom(run, exc)
        if (problem := io_fault(exc)) is not None:
            say(f"error: {problem}")
            run.fail("io", problem, "free disk space or fix the folder's permissions, then resume with --resume")
            return EXIT_INPUT
        if isinstance(exc, KeyboardInterrupt):
            run.fail("internal", "interrupted", "resume the run with --resume")
            return 130
        say(traceback.format_exc().rstrip())
        peer = _failed_peer(run)
        if peer:  # a collective broke because another rank died first: report what killed it
            kind = peer.pop("type")
            run.fail(kind, f"rank {peer['rank']}: {peer.pop('message')}", peer.pop("hint"), **peer)
            return exit_code(kind)
        run.fail("internal", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                 "this is a bug; the traceback is in the log")
        return EXIT_INTERNAL


def _failed_peer(run: Run) -> dict[str, Any] | None:
    return peer_error(run.run_dir, wait_s=2.0) if run.lead and world_size() > 1 else None


def _report_oom(run: Run, exc: BaseException) -> int:
    from trainer.prediction import oom_hint

    device = run.runtime.device if run.runtime else "cpu"
    peak = run.measured_peak()
    budget = device_budget(device)
    hint, changes = oom_hint(run.cfg, run.runtime.precision if run.runtime else "fp32", budget)
    say(f"error: out of memory: {exc}")
    run.fail("oom", f"out of memory at {peak / 2**30:.2f} GiB measured ({device})", hint,
             peak_bytes=peak, budget_bytes=budget, fix=json.dumps(changes) if changes else None)
    return EXIT_OOM
