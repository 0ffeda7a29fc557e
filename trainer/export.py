"""``python -m trainer export``: the trained result as a standalone folder.

Without ``--merge`` the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is
copied; with it, the adapter is merged into the base weights and a plain transformers model is
written. A QLoRA adapter is merged onto the dequantized 4-bit base it was trained against.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from trainer.config import ConfigError, TrainConfig
from trainer.files import atomic_dir
from trainer.rundir import latest_checkpoint
from trainer.loading import (ModelError, load_tokenizer, model_class, model_layout, per_expert, quantization_config,
                             weight_dtype)


class ExportError(RuntimeError):
    pass


def trained_weights(run_dir: Path, cfg: TrainConfig) -> Path:
    """The final adapter/model of the run, else its newest complete checkpoint."""
    final = run_dir / ("model" if cfg.method == "full" else "adapter")
    if final.is_dir():
        return final
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ExportError(f"{run_dir} has neither a final {final.name}/ nor a complete checkpoint to export")
    return checkpoint


def export(run_dir: Path, out: Path, merge: bool) -> Path:
    cfg = TrainConfig.load(run_dir / "config.json")
    source = trained_weights(run_dir, cfg)
    tokenizer = load_tokenizer(cfg)
    with atomic_dir(out) as tmp:
        if cfg.method == "full" or not merge:
            names = [p for p in source.iterdir() if p.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model")
                     and not p.name.startswith(("trainer_state", "optimizer", "scheduler", "rng_state"))]
            for p in names:
                shutil.copy2(p, tmp / p.name)
            if cfg.method != "full" and per_expert(cfg):
                _without_dropout(tmp / "adapter_config.json")
        else:
            _merge(cfg, source, tmp)
        tokenizer.save_pretrained(str(tmp))
    return out


def _without_dropout(adapter_config: Path) -> None:
    """Stock transformers 5 fuses MoE experts, and peft (0.21) then loads per-expert adapters
    through ``ParamWrapper``, which refuses any LoRA dropout. Dropout only acts in training, so
    the exported adapter says 0: it loads there, and computes the same anywhere else."""
    config = json.loads(adapter_config.read_text())
    config["lora_dropout"] = 0.0
    adapter_config.write_text(json.dumps(config, indent=2) + "\n")


def _merge(cfg: TrainConfig, adapter: Path, dest: Path) -> None:
    with model_layout(cfg):
        _merge_in_layout(cfg, adapter, dest)


def _merge_in_layout(cfg: TrainConfig, adapter: Path, dest: Path) -> None:
    from peft import PeftModel

    precision = "bf16" if cfg.precision in ("bf16", "bf16-mixed") else "fp32"
    kwargs = dict(dtype=weight_dtype(precision), use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
    if cfg.method == "qlora":
        kwargs.update(quantization_config=quantization_config(cfg, precision), device_map={"": "cpu"})
    base = model_class(cfg).from_pretrained(cfg.model, **kwargs)
    if cfg.method == "qlora":
        base = base.dequantize()  # the 4-bit weights the adapter was trained against, in 16/32-bit
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(dest), safe_serialization=True)


def main(run: str, out: str, merge: bool = False) -> int:
    run_dir = Path(run)
    if not (run_dir / "config.json").is_file():
        print(f"error: {run_dir} is not a run directory (no config.json)", file=sys.stderr)
        return 2
    try:
        export(run_dir, Path(out), merge)
    except (ConfigError, ModelError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(str(Path(out).resolve()))
    return 0


