"""The options every planning command shares, as argparse arguments and as a TrainSetup, and the
one way ``--json`` output is printed."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from planner.loss import LOSSES
from planner.options import (
    ADAPTER_DTYPES,
    ATTENTIONS,
    KERNELS,
    METHODS,
    OFFLOADS,
    OPTIMIZERS,
    PEFTS,
    PRECISIONS,
    SHARDINGS,
    STACKS,
    TrainSetup,
    check_bound,
)
from planner.stacks import load_stack


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _alts(values: Sequence[str]) -> str:
    return "{" + ",".join(values) + "}"


def _finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity replaced by null. The options' bounds keep every figure
    finite; this is the last guard, because ``json.dumps`` would print ``Infinity``, which no
    strict JSON parser reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_json(doc: Any) -> None:
    """Every ``--json`` output: strict JSON (RFC 8259), no NaN or Infinity."""
    print(json.dumps(_finite(doc), indent=2, allow_nan=False))


def add_options(p: argparse.ArgumentParser, with_model: bool = True) -> None:
    d = TrainSetup()
    if with_model:  # `table` has fixed models and rows that set method, quant and precision
        p.add_argument("--model", required=True,
                       help="catalog id (e.g. meta-llama/Llama-2-7b-hf), a config.json, or a model folder")
        p.add_argument("--method", default=None, metavar=_alts(METHODS), help=f"({d.method})")
        p.add_argument("--quant", default=None, metavar="{nf4,fp4,int8}", help="QLoRA base format (nf4)")
        p.add_argument("--precision", default=None, metavar=_alts(PRECISIONS), help=f"({d.precision})")
    # A stack's preset (--stack) supplies the knobs below that the command line leaves out: they
    # default to None here, and TrainSetup's own defaults fill what neither sets.
    p.add_argument("--stack", default=d.stack, metavar=_alts(STACKS),
                   help="the training stack planned for: hf (this app's trainer), or another stack's defaults "
                        "for the knobs you leave out (docs/stacks.md)")
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None,
                   help=f"({_on(d.double_quant)})")
    p.add_argument("--kbit-upcast", action=argparse.BooleanOptionalAction, default=None,
                   help="QLoRA: embeddings, LM head and norms in fp32 (prepare_model_for_kbit_training; default) "
                        "or, with --no-kbit-upcast, in the load dtype as the QLoRA paper's script did")
    p.add_argument("--adapter-dtype", default=None, metavar=_alts(ADAPTER_DTYPES), help=f"({d.adapter_dtype})")
    p.add_argument("--optimizer", default=None, metavar=_alts(OPTIMIZERS), help=f"({d.optimizer})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="micro-batch per GPU (1)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per sample (2048)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=None,
                   help="micro-batches per optimizer step (1); above 1 the gradients stay allocated through forward")
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help=f"({_on(d.grad_checkpointing)})")
    p.add_argument("--attention", default=d.attention, metavar=_alts(ATTENTIONS))
    p.add_argument("--loss", default=None, metavar=_alts(LOSSES),
                   help="standard: the whole logits at once; chunked: LM head and loss chunk by chunk; "
                        "chunked-output: torchtune's (8 chunks, fp32 log-probabilities kept) (standard)")
    p.add_argument("--loss-chunk-mib", type=int, default=None,
                   help="the chunked loss's chunks by their fp32 logits' size (Unsloth: 4096); 0: as large as the "
                        "hidden states (0)")
    p.add_argument("--kernels", default=None, metavar=_alts(KERNELS),
                   help="eager: PyTorch's and peft's modules; compile: the same under torch.compile, pointwise "
                        "operations fused (faster); unsloth: Unsloth's fused LoRA kernels, faster and keeping fewer "
                        f"activations (both estimate only) ({d.kernels})")
    p.add_argument("--optimizer-in-backward", action=argparse.BooleanOptionalAction, default=None,
                   help="full fine-tuning: update each parameter as soon as its gradient exists, then free it")
    p.add_argument("--offload-activations", action=argparse.BooleanOptionalAction, default=None,
                   help="with checkpointing: each layer's saved input in host RAM, not on the GPU")
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=None, help=f"({d.lora_dropout})")
    p.add_argument("--lora-targets", type=_csv, default=d.lora_targets, help="all-linear, or e.g. q_proj,v_proj")
    p.add_argument("--modules-to-save", type=_csv, default=(), help="e.g. embed_tokens,lm_head")
    p.add_argument("--use-dora", action=argparse.BooleanOptionalAction, default=False,
                   help="LoRA/QLoRA: DoRA, a trained magnitude per output row (peft use_dora)")
    p.add_argument("--peft", default=d.peft, metavar=_alts(PEFTS),
                   help="LoRA/QLoRA: the adapter (lora; prefix turns gradient checkpointing off unless given)")
    p.add_argument("--adalora-init-r", type=int, default=d.adalora_init_r,
                   help="AdaLoRA: starting rank, pruned to --lora-r on average (0: 1.5 x --lora-r)")
    p.add_argument("--virtual-tokens", type=int, default=d.virtual_tokens,
                   help=f"prompt/prefix tuning: trained virtual tokens ({d.virtual_tokens})")
    p.add_argument("--num-gpus", type=int, default=d.num_gpus)
    p.add_argument("--sharding", default=d.sharding, metavar=_alts(SHARDINGS))
    p.add_argument("--offload", default=d.offload, metavar=_alts(OFFLOADS))
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                   help="examples concatenated into blocks of exactly --seq-len tokens, not padded per micro-batch "
                        f"({_on(d.packing)})")
    p.add_argument("--dataset-tokens", type=int, default=None, help="tokens in the dataset (time and cost)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the dataset (time and cost)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


CLI_NUMBERS = ("dataset_tokens", "epochs", "gpu_memory_gib", "host_ram_gib", "price_per_hour", "electricity_price")
"""Numeric options outside TrainSetup (which checks its own): bounds in planner.options.BOUNDS."""


def setup_args(s: TrainSetup) -> list[str]:
    """``s`` as the options :func:`add_options` parses (and :func:`setup_from_args` reads back)."""
    def flag(name: str, on: bool) -> str:
        return f"--{name}" if on else f"--no-{name}"

    args = ["--method", s.method, "--precision", s.precision, "--adapter-dtype", s.adapter_dtype,
            "--optimizer", s.optimizer, "--batch-size", str(s.batch_size),
            "--gradient-accumulation-steps", str(s.gradient_accumulation_steps), "--seq-len", str(s.seq_len),
            "--attention", s.attention, "--loss", s.loss, "--loss-chunk-mib", str(s.loss_chunk_mib),
            "--kernels", s.kernels,
            "--stack", s.stack, "--lora-r", str(s.lora_r), "--lora-alpha", str(s.lora_alpha),
            "--lora-dropout", repr(s.lora_dropout), "--lora-targets", ",".join(s.lora_targets),
            "--modules-to-save", ",".join(s.modules_to_save), "--peft", s.peft,
            "--adalora-init-r", str(s.adalora_init_r), "--virtual-tokens", str(s.virtual_tokens),
            "--num-gpus", str(s.num_gpus),
            "--sharding", s.sharding, "--offload", s.offload,
            flag("double-quant", s.double_quant), flag("kbit-upcast", s.kbit_prepare),
            flag("grad-checkpointing", s.grad_checkpointing), flag("offload-activations", s.offload_activations),
            flag("optimizer-in-backward", s.optimizer_in_backward), flag("use-dora", s.use_dora),
            flag("packing", s.packing)]
    return args + (["--quant", s.quant] if s.quant else [])


STACK_OPTIONS = {"precision": "precision", "double_quant": "double_quant", "kbit_upcast": "kbit_prepare",
                 "adapter_dtype": "adapter_dtype", "optimizer": "optimizer",
                 "gradient_accumulation_steps": "gradient_accumulation_steps",
                 "grad_checkpointing": "grad_checkpointing", "loss": "loss", "loss_chunk_mib": "loss_chunk_mib",
                 "optimizer_in_backward": "optimizer_in_backward", "offload_activations": "offload_activations",
                 "lora_dropout": "lora_dropout", "kernels": "kernels", "packing": "packing"}
"""Options a stack's preset may supply (argparse name -> TrainSetup field): None unless given."""


def setup_from_args(a: argparse.Namespace) -> TrainSetup:
    for name in CLI_NUMBERS:
        value = getattr(a, name, None)
        if value is not None:
            check_bound(name, value)
    given = {field: getattr(a, option) for option, field in STACK_OPTIONS.items()
             if getattr(a, option, None) is not None}
    in_backward = bool(given.get("optimizer_in_backward"))
    peft = getattr(a, "peft", "lora")
    if peft == "prefix" and "grad_checkpointing" not in given:
        given["grad_checkpointing"] = False  # TrainSetup says why prefix tuning needs it off
    setup = TrainSetup(
        # the optimizer in backward is for full fine-tuning: without --method (or in `table`) it picks it
        method=getattr(a, "method", None) or ("full" if in_backward else TrainSetup().method),
        quant=getattr(a, "quant", None), batch_size=a.batch_size, seq_len=a.seq_len, attention=a.attention,
        lora_r=a.lora_r, lora_alpha=a.lora_alpha, lora_targets=a.lora_targets, modules_to_save=a.modules_to_save,
        grad_checkpointing=given.get("grad_checkpointing", TrainSetup().grad_checkpointing),
        use_dora=bool(getattr(a, "use_dora", False)), peft=peft, adalora_init_r=getattr(a, "adalora_init_r", 0),
        virtual_tokens=getattr(a, "virtual_tokens", TrainSetup().virtual_tokens),
        num_gpus=a.num_gpus, sharding=a.sharding, offload=a.offload,
        # what the user chose, checked beside each other once the stack has filled the rest
        explicit=frozenset(given))
    return load_stack(a.stack).apply(setup, **given)


def add_data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="FILE",
                   help="your training data: unpacked, its examples' lengths set the padding each micro-batch "
                        "computes, the longest micro-batch memory must hold and the data set's tokens "
                        "(tokenized by --model's tokenizer, so --model is a folder)")


def with_data_file(a: argparse.Namespace, setup: TrainSetup) -> TrainSetup:
    """``setup`` with --data's example lengths (measured by the trainer's tokenization), if given."""
    if a.data is None:
        return setup
    from planner.lengths import measure_lengths

    return replace(setup, lengths=measure_lengths(a.model, a.data))
