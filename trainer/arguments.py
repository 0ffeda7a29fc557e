"""The transformers ``TrainingArguments`` a run config asks for (one process, DDP or FSDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.config import ConfigError, TrainConfig


def training_args(cfg: TrainConfig, run_dir: Path, runtime: Any, has_eval: bool) -> Any:
    """``runtime``: the device and precision the run resolved to (``trainer.loading.Runtime``)."""
    from transformers import TrainingArguments

    precision = runtime.precision
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        optim=cfg.optimizer,
        bf16=precision.startswith("bf16"),
        fp16=precision.startswith("fp16"),
        **_parallel_args(cfg, runtime.device),
        logging_steps=cfg.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps or None,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=runtime.device == "cpu",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
    )


def _parallel_args(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """Checkpointing, and how several processes share the work (none with one process)."""
    if cfg.num_processes == 1:
        return _checkpointing_args(cfg)
    common: dict[str, Any] = {"ddp_backend": "gloo" if device == "cpu" else "nccl"}
    if cfg.sharding == "ddp":
        # every parameter takes part in every step (LoRA's frozen base has no gradient at all)
        return {**_checkpointing_args(cfg), **common, "ddp_find_unused_parameters": False}
    # FSDP2 shards parameters, gradients and optimizer state per decoder layer, and saves sharded
    # checkpoints: each rank writes its own part, and resume needs the same world size.
    # Checkpointing stays transformers' own: FSDP's wrapper renames the layers, and accelerate's
    # sharded save of a peft model then keeps no adapter weight (resume would restart them).
    return {**_checkpointing_args(cfg), **common, "fsdp": True,
            "fsdp_config": {"version": 2, "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT",
                            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}}


def _checkpointing_args(cfg: TrainConfig) -> dict[str, Any]:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing, and its
    kwargs take ``offload``: the checkpointed inputs go to pinned host memory through torch's
    ``save_on_cpu`` (what the planner's activation offloading assumes)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if cfg.offload_activations:
        _check_offload_supported(key)
        kwargs["offload"] = True
    return {key: cfg.grad_checkpointing, f"{key}_kwargs": kwargs}


def _check_offload_supported(key: str) -> None:
    """transformers 5.x's ``activation_checkpointing_enable(offload=...)``; older versions would
    hand ``offload`` on to torch's checkpoint, which rejects it mid-training."""
    import inspect

    import transformers
    from transformers import PreTrainedModel

    enable = getattr(PreTrainedModel, "activation_checkpointing_enable", None)
    if key != "activation_checkpointing" or enable is None or "offload" not in inspect.signature(enable).parameters:
        raise ConfigError(f"offload_activations: transformers {transformers.__version__} cannot offload checkpointed "
                          "activations; upgrade transformers, or set offload_activations false", "offload_activations")
