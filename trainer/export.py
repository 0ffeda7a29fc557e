"""``python -m trainer export``: the trained result as a standalone folder.

Without ``--merge`` the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is
copied; with it, the adapter is merged into the base weights and a plain transformers model is
written. A QLoRA adapter is merged onto the dequantized 4-bit base it was trained against.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from trainer.config import ConfigError, TrainConfig
from trainer.files import atomic_dir
from trainer.loading import ModelError, load_tokenizer, quantization_config, weight_dtype


class ExportError(RuntimeError):
    pass


def trained_weights(run_dir: Path, cfg: TrainConfig) -> Path:
    """The final adapter/model of the run, else its newest complete checkpoint."""
    from trainer.run import latest_checkpoint

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
        else:
            _merge(cfg, source, tmp)
        tokenizer.save_pretrained(str(tmp))
    return out


def _merge(cfg: TrainConfig, adapter: Path, dest: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    precision = "bf16" if cfg.precision in ("bf16", "bf16-mixed") else "fp32"
    kwargs = dict(dtype=weight_dtype(precision), use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
    if cfg.method == "qlora":
        kwargs.update(quantization_config=quantization_config(cfg, precision), device_map={"": "cpu"})
    base = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
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


