#!/usr/bin/env python3
"""The host side of a training step: seconds of Python, dispatcher and autograd per decoder layer,
and the training loop's own share per optimizer step.

A GPU runs a step's kernels only as fast as the host launches them. Eager PyTorch spends
microseconds per operation before any kernel starts (Python, the dispatcher, autograd's graph,
peft's and transformers' module code), and LoRA adds several small operations to every adapted
layer. When a micro-batch's kernels finish sooner than the host can issue them (small steps, fast
GPUs), the step takes the host's time. AdaLoRA adds, per adapted layer and step, its
orthogonality penalty in forward and its rank allocator after the update (``adalora``: the
trainer's config, LoRA's targets).

Measured here on the CPU with a Llama of width 64 and 8 tokens, one torch thread: the arithmetic
is negligible, so a layer's time is its host cost. The slope between 2 and 6 layers (forward,
backward, and the recompute under checkpointing) removes the fixed part (embedding, head, loss).
Median of ``--repeats`` steps after warm-up. The Hugging Face Trainer's step on the same model,
less its bare forward and backward, is what the loop adds once per optimizer step.

``--compile`` measures each case again under ``torch.compile`` (inductor; gcc builds its CPU
kernels, about 15 s a model): the compiled graph issues fewer, fused kernels from one call, so
``--kernels compile`` plans pay less host time per layer.

    python scripts/bench_host_overhead.py [--repeats 30] [--compile] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CASES = [("full", False), ("full", True), ("lora", False), ("lora", True), ("adalora", False)]
LAYERS = (2, 6)


def _model(layers: int, method: str, checkpointing: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    elif method == "adalora":  # the trainer's own config and peft workaround
        from planner.options import TrainSetup
        from planner.simulate.adapters import freeze_rank_counts, peft_config

        model = get_peft_model(model, peft_config(TrainSetup(peft="adalora", lora_r=16, lora_alpha=32), 1000))
        freeze_rank_counts(model)
    if method != "full" and checkpointing:
        model.enable_input_require_grads()
    model.train()
    return model


def step_seconds(layers: int, method: str, checkpointing: bool, repeats: int, compiled: bool = False) -> float:
    import torch

    model = _model(layers, method, checkpointing)
    if compiled:
        model = torch.compile(model)
    ids = torch.randint(0, 256, (1, 8))

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss  # AdaLoRA's adds its orthogonality penalty
        loss.backward()
        if method == "adalora":  # its rank allocator, mid-schedule, as trainer/callbacks.py runs it
            model.base_model.update_and_allocate(500)
        model.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def trainer_step_seconds(layers: int, steps: int) -> float:
    """Seconds per optimizer step of the Hugging Face Trainer (this app's trainer's loop) on the same
    LoRA model with checkpointing: the forward and backward above, plus what the loop adds once a
    step (the data loader and collator, AdamW, gradient clipping, the schedule, zeroing, logging)."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments

    model = _model(layers, "lora", True)
    rows = [{"input_ids": torch.randint(0, 256, (8,)).tolist()} for _ in range(64)]

    def collate(batch: list[dict]) -> dict:
        ids = torch.tensor([row["input_ids"] for row in batch])
        return {"input_ids": ids, "labels": ids}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=1, max_steps=steps, logging_steps=10,
                                 save_strategy="no", report_to=[], use_cpu=True, max_grad_norm=1.0,
                                 disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        with contextlib.redirect_stdout(io.StringIO()):  # its printed logs: the output is the table (or JSON)
            trainer.train()  # warm-up: lazy imports, the optimizer's first state
            args.max_steps = 2 * steps
            start = time.perf_counter()
            trainer.train(resume_from_checkpoint=None)
            return (time.perf_counter() - start) / (2 * steps)


def measure(repeats: int, compiled: bool = False) -> dict[str, float]:
    out = {}
    for kind in (False, True) if compiled else (False,):
        cases = [case for case in CASES if case[0] != "adalora"] if kind else CASES  # compiled: full and LoRA
        for method, ckpt in cases:
            few, many = (step_seconds(n, method, ckpt, repeats, kind) for n in LAYERS)
            name = f"{method}, checkpointing {'on' if ckpt else 'off'}{', compiled' if kind else ''}"
            out[name] = (many - few) / (LAYERS[1] - LAYERS[0])
    # the loop's own share: a Trainer step less the bare forward and backward of the same model
    layers = LAYERS[0]
    out["trainer loop, per optimizer step"] = (trainer_step_seconds(layers, 5 * repeats)
                                               - step_seconds(layers, "lora", True, repeats))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="also measure each case under torch.compile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("error: --repeats must be a positive whole number", file=sys.stderr)
        return 2
    import torch
    from transformers.utils import logging

    torch.set_num_threads(1)
    logging.set_verbosity_error()
    rows = measure(args.repeats, args.compile)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"Host milliseconds per decoder layer and micro-batch, and the loop's per optimizer step (torch "
          f"{torch.__version__}, 1 thread, median of {args.repeats}):\n")
    print("| case | ms |")
    print("|---|---:|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds * 1000:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
