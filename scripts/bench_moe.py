#!/usr/bin/env python3
"""MoE figures: the per-expert layout the trainer builds against stock transformers 5 (fused experts).

1. QLoRA weights after ``prepare_model_for_kbit_training`` for Mixtral-8x7B and 8x22B, from the
   catalog's exact parameter counts: experts in 4-bit per expert (ours) against fused experts
   that bitsandbytes leaves 16-bit and peft's prepare makes fp32 (stock), and the stock 16-bit
   load;
2. on a small Mixtral built here (8 experts, top-2, experts most of its weights), in a fresh
   process per layout, the bytes of live tensor storage (precise mode's counter, run on real
   tensors) while loading it for QLoRA, once loaded, and during one training step. On the CPU
   transformers keeps every checkpoint tensor it read until loading ends, in both layouts (the
   whole bf16 checkpoint here); on a GPU those stay in host memory and only what is placed on
   the device counts;
3. steps/s on this CPU of the per-expert loop against transformers' fused grouped_mm kernel,
   for LoRA (dropout 0: the only LoRA stock peft runs on fused experts) and for full fine-tuning
   (which the trainer keeps fused). A GPU figure cannot be taken here.

    python scripts/bench_moe.py [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GiB = 2**30
MiB = 2**20

# Experts make up most of the weights, as in Mixtral (8 x 3 x 1024 x 2816 = 69M per layer).
SMALL = dict(vocab_size=1024, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=512,
             tie_word_embeddings=False)

CHILD = r"""
import contextlib, gc, json, sys, torch
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from planner.simulate.meta import live_bytes_class
path, layout = sys.argv[1:3]

bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.bfloat16)
kwargs = dict(dtype=torch.bfloat16, quantization_config=bnb, device_map={"": "cpu"})
held = contextlib.ExitStack()  # the layout stays installed until the process ends
if layout == "per-expert":
    from trainer.config import TrainConfig
    from trainer.loading import model_class, model_layout
    cfg = TrainConfig(model=path, dataset="unused.jsonl", method="qlora")
    held.enter_context(model_layout(cfg))
    cls = model_class(cfg)
else:
    cls = AutoModelForCausalLM
counter = live_bytes_class()(gpu_kernels=False)  # precise mode's live-storage counter, on real tensors
with counter:
    model = cls.from_pretrained(path, **kwargs)
    gc.collect()
    load_peak, loaded = counter.peak, counter.current
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 1024, (2, 256))
    counter.reset_peak()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    step_peak = counter.peak
print(json.dumps({"load_peak": load_peak, "loaded": loaded, "weights": weights, "step_peak": step_peak}))
"""


def weights_table() -> list[str]:
    from planner.catalog import resolve_model
    from planner.memory import estimate
    from planner.options import TrainSetup

    lines = ["| model | ours: experts 4-bit per expert | stock: fused experts, fp32 after prepare "
             "| stock 16-bit load |",
             "|---|---:|---:|---:|"]
    for model_id in ("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x22B-v0.1"):
        spec = resolve_model(model_id)
        ours = estimate(spec, TrainSetup(method="qlora")).breakdown
        arch = spec.arch
        experts = sum(b.count * lin.weight_params for b in arch.blocks for lin in b.linears if lin.role == "expert")
        others_quantized = arch.linear_weight_params - experts
        # the same bitsandbytes 4-bit (+ double-quantized scales) for the attention projections;
        # experts, embeddings, LM head, norms and routers in fp32 after prepare
        scales = ours.quant_state * others_quantized / arch.linear_weight_params
        stock = others_quantized / 2 + scales + (spec.total_params - others_quantized) * 4
        lines.append(f"| {model_id} | {(ours.weights + ours.quant_state) / GiB:.1f} GiB | {stock / GiB:.1f} GiB | "
                     f"{spec.total_params * 2 / GiB:.1f} GiB |")
    return lines


def measure(path: Path, layout: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), layout], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(path: Path, layout: str, method: str, steps: int) -> float:
    """Steps/s of LoRA (or full fine-tuning) training steps, batch 4 x 64 tokens, fp32, one thread."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.config import TrainConfig
    from trainer.loading import model_class, model_layout

    torch.set_num_threads(1)
    cfg = TrainConfig(model=str(path), dataset="unused.jsonl", method="lora")
    with model_layout(cfg) if layout == "per-expert" else contextlib.nullcontext():
        cls = model_class(cfg) if layout == "per-expert" else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch.float32)
        if method == "lora":
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "w1",
                                                                     "w2", "w3"]))
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        ids = torch.randint(0, 1024, (4, 64), generator=torch.Generator().manual_seed(0))
        times = []
        for _ in range(steps + 2):
            start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - start)
    return 1 / statistics.median(times[2:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print("QLoRA weights after prepare (weights + quantization state):")
    print("\n".join(weights_table()))

    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixtral-small"
        torch.manual_seed(0)
        model = MixtralForCausalLM(MixtralConfig(**SMALL)).to(torch.bfloat16)
        n = sum(p.numel() for p in model.parameters())
        model.save_pretrained(path)
        del model
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"\nsmall Mixtral: {n / 1e6:.0f}M parameters, 8 experts, top-2 ({size / MiB:.0f} MiB bf16 on disk)")
        found = {layout: measure(path, layout) for layout in ("stock", "per-expert")}
        print("| QLoRA, live tensor bytes on the CPU | stock (fused) | per-expert |\n|---|---:|---:|")
        for key, label in (("load_peak", "loading: peak (with the checkpoint tensors read into memory)"),
                           ("loaded", "loaded: held"),
                           ("weights", "after prepare + LoRA: parameters and buffers"),
                           ("step_peak", "one training step (2 x 256 tokens, bf16 autocast): peak")):
            print(f"| {label} | " + " | ".join(f"{found[k][key] / MiB:,.0f} MiB" for k in found) + " |")

        print("\nsteps/s on this CPU (one thread, batch 4 x 64, fp32; median of "
              f"{args.steps} steps):\n| method | fused grouped_mm (stock) | per-expert loop | ratio |\n"
              "|---|---:|---:|---:|")
        for method, label in (("lora", "LoRA (dropout 0)"), ("full", "full (the trainer keeps it fused)")):
            stock, mine = (speed(path, layout, method, args.steps) for layout in ("stock", "per-expert"))
            print(f"| {label} | {stock:.2f} | {mine:.2f} | {mine / stock:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
