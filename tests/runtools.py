"""Finished run directories as the trainer leaves them (metrics.jsonl, run.json, config.json), for
the accuracy, CLI and Runs page tests."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.protocol import encode
from trainer.rundir import write_marker

MiB, GiB = 2**20, 2**30


def finished_run(root: Path, name: str, method: str = "lora", measured: int | None = GiB,
                 predicted: int | None = GiB, device: str = "cuda", status: str = "completed",
                 rss: int = GiB, phase: str | None = None, summary: bool = True, gpu: str | None = None,
                 **config: object) -> Path:
    """A run of ``method`` whose peak allocated was ``measured`` against ``predicted`` (bytes).

    ``summary=False``: no run.json and no end event (a killed run: the last step's peak counts).
    """
    path = root / name
    path.mkdir(parents=True)
    write_marker(path)
    cfg = {"model": "demo/tiny", "dataset": "data.jsonl", "output_dir": str(path), "method": method,
           "precision": "auto", **config}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    alloc = measured or 0
    reserved = alloc if device == "cuda" else 0
    lines = [
        encode("start", 0.0, model="demo/tiny", method=method, params_total=1000, params_trainable=100,
               max_steps=2, run_dir=str(path), predicted_peak_bytes=predicted, predicted_reserved_bytes=predicted,
               predicted_device_bytes=predicted, device=device, precision="fp32" if device == "cpu" else "bf16",
               gpu=gpu),
        encode("step", 1.0, step=1, epoch=0.5, loss=2.0, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0,
               peak_alloc_bytes=alloc // 2, peak_reserved_bytes=reserved // 2, rss_bytes=rss, max_steps=2),
        encode("step", 2.0, step=2, epoch=1.0, loss=1.5, lr=1e-4, grad_norm=1.0, tokens_per_s=100.0,
               peak_alloc_bytes=alloc, peak_reserved_bytes=reserved, rss_bytes=rss, max_steps=2),
    ]
    ratio = round(alloc / predicted, 4) if alloc and predicted else None
    memory = {"peak_alloc_bytes": measured, "peak_alloc_phase": phase, "peak_ratio": ratio}
    if summary:
        lines.append(encode("end", 3.0, status=status, steps=2, output_dir=str(path), runtime_s=3.0,
                            session_runtime_s=3.0, **memory))
        (path / "run.json").write_text(json.dumps({
            "status": status, "steps": 2, "final_loss": 1.5,
            "peak_measured_bytes": alloc if device == "cuda" else rss,
            "peak_kind": "cuda_max_allocated" if device == "cuda" else "host_rss",
            "predicted_peak_bytes": predicted, "predicted_reserved_bytes": predicted,
            "predicted_device_bytes": predicted, **memory, "runtime_s": 3.0, "session_runtime_s": 3.0,
            "model": "demo/tiny", "method": method, "error": None}, indent=2))
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return path
