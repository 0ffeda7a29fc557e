"""The model precise mode steps: transformers' own, built from its config on the meta device, in
the layout the trainer builds (MoE per expert), quantized by bitsandbytes, with peft's LoRA, and
the optimizer HF Trainer would build."""

from __future__ import annotations

import contextlib
from typing import Any

from planner.errors import PlannerError
from planner.options import TrainSetup
from planner.simulate.adapters import freeze_rank_counts, peft_config
from planner.simulate.meta import autocast_dtype, flash_attention
from planner.simulate.moe_layout import needs_split, peft_targets_as_given, split_experts


def _dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def build_model(config: dict[str, Any], layers: int, setup: TrainSetup, device: str, recompute: Any = None) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {**config, "num_hidden_layers": layers, "use_cache": False}
    if isinstance(fields.get("layer_types"), list):  # transformers checks one entry per layer
        fields["layer_types"] = fields["layer_types"][:layers]
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise PlannerError("precise mode needs the model's config.json with a model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **{k: v for k, v in fields.items() if k != "architectures"})
    except (ValueError, KeyError) as exc:
        raise PlannerError(f"cannot simulate: transformers does not know model_type '{model_type}' ({exc})") from None
    hf_config._attn_implementation = ({"eager": "eager", "sdpa": "sdpa"}.get(setup.attention)
                                      or flash_attention(autocast_dtype(setup)))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(_dtype(setup.precision))
    try:
        with torch.device(device):
            # the run's dtype, named: transformers 5 builds a config's own dtype over the default
            # one (an fp32 master copy of a bfloat16 checkpoint would come out bf16)
            model = AutoModelForCausalLM.from_config(hf_config, dtype=_dtype(setup.precision))
    finally:
        torch.set_default_dtype(previous)
    if setup.is_peft and needs_split(model_type):
        split_experts(model)  # the trainer's layout: one nn.Linear per expert projection
    if setup.method == "qlora":
        _quantize(model, setup)
        if setup.kbit_prepare:
            from peft import prepare_model_for_kbit_training

            # checkpointing is enabled below, as for LoRA
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if setup.is_peft:
        from peft import get_peft_model

        with peft_targets_as_given():
            model = get_peft_model(model, peft_config(setup), autocast_adapter_dtype=setup.adapter_dtype == "fp32")
        freeze_rank_counts(model)
    if setup.grad_checkpointing:
        kwargs: dict[str, Any] = {"use_reentrant": False}
        if recompute is not None:
            # the autograd engine recomputes meta layers on its own thread, where a torch-function
            # mode entered on this one is not active
            kwargs["context_fn"] = lambda: (contextlib.nullcontext(), recompute)
        # activation offloading: transformers' own, through planner/simulate/offload.py's hooks
        offload = {"offload": True} if setup.offload_activations else {}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs, **offload)
        if setup.is_peft:
            model.enable_input_require_grads()
    model.train()
    return model


def _bitsandbytes() -> Any:
    import logging

    # its import warns that an optional CPU kernel package is missing: noise for a simulation
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def _quantize(model: Any, setup: TrainSetup) -> None:
    """Swap every Linear but the LM head for bitsandbytes' ``Linear4bit``, quantized by
    bitsandbytes itself: the packed uint8 weight, the absmax per 64 weights, and under double
    quantization the 8-bit absmax with its fp32 second level, at their real sizes."""
    import torch

    bnb = _bitsandbytes()
    from bitsandbytes.functional import quantize_4bit

    if setup.quant == "int8":
        raise PlannerError("cannot simulate int8 (LLM.int8) bases yet; use `python -m planner estimate` for it")
    # bitsandbytes caches its 8-bit code table on the first device it quantizes on; a meta copy
    # cannot be moved to real tensors later
    qmaps = bnb.functional.name2qmap
    if "dynamic" in qmaps and qmaps["dynamic"].device.type == "meta":
        qmaps["dynamic"] = bnb.functional.create_dynamic_map()
    # the trainer's FSDP recipe: packed weights stored in the compute dtype, so FSDP can shard them
    # with the rest (trainer/loading.py quantization_config)
    sharded = setup.sharding == "fsdp" and setup.num_gpus > 1
    storage = (autocast_dtype(setup) or torch.float32) if sharded else torch.uint8
    head = model.get_output_embeddings()
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, torch.nn.Linear) and child is not head]
    for parent, name, linear in swaps:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=autocast_dtype(setup) or torch.float32, quant_type=setup.quant,
                              compress_statistics=setup.double_quant, quant_storage=storage,
                              device=linear.weight.device)
        packed, state = quantize_4bit(linear.weight.data, blocksize=64, compress_statistics=setup.double_quant,
                                      quant_type=setup.quant, quant_storage=storage)
        q.weight = bnb.nn.Params4bit(data=packed, requires_grad=False, quant_state=state, quant_type=setup.quant,
                                     blocksize=64, compress_statistics=setup.double_quant, bnb_quantized=True,
                                     quant_storage=storage, module=q)
        q.quant_state = state  # as bitsandbytes' own quantizing sets it: FSDP's shards drop the weight's
        q.bias = linear.bias
        setattr(parent, name, q)


def make_optimizer(name: str, params: list[Any], foreach: bool = True) -> Any:
    """The optimizer HF Trainer builds for ``optim=name``, states at their real sizes. ``foreach``:
    torch's AdamW steps all tensors at once on a GPU, one by one on the CPU (its default there).

    Paged bitsandbytes optimizers keep the same states in CUDA managed memory, which the meta
    device cannot allocate: they are simulated unpaged, as device memory (their worst case)."""
    import torch

    if name in ("adamw_torch", "adamw_torch_fused"):
        # the fused kernel has no meta registration; its states are the foreach ones, less the
        # sqrt(exp_avg_sq) temporary
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach and name == "adamw_torch", fused=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False)
    bnb = _bitsandbytes()
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        return bnb.optim.AdamW8bit(params, lr=1e-4)
    return bnb.optim.AdamW32bit(params, lr=1e-4)  # paged_adamw_32bit

