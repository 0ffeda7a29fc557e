"""``python -m trainer export``: the trained result as a standalone folder.

Without ``--merge`` the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is
copied; with it, the adapter is merged into the base weights and a plain transformers model is
written. A QLoRA adapter is merged onto the dequantized 4-bit base it was trained against. Either
way a model card (``README.md``, with ``loss.svg``: trainer/model_card.py) says how it was trained,
what memory it measured against the prediction, and how to load it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from planner.atomic import atomic_dir
from trainer.config import ConfigError, TrainConfig, merged_precision
from trainer.loading import (
    ModelError,
    load_tokenizer,
    model_class,
    model_layout,
    per_expert,
    quantization_config,
    weight_dtype,
)
from trainer.model_card import write_card
from trainer.rundir import TRAINING_STATE, is_run_dir, merge_refusal, trained_folder


class ExportError(RuntimeError):
    pass


def trained_weights(run_dir: Path, cfg: TrainConfig) -> Path:
    """The final adapter/model of the run, else its newest complete checkpoint."""
    found = trained_folder(run_dir, cfg.method == "full")
    if found is None:
        final = "model" if cfg.method == "full" else "adapter"
        raise ExportError(f"{run_dir} has neither a final {final}/ nor a complete checkpoint to export")
    return found


EXPORT_MARKER = ".finetune-export.json"
"""Written into every export: the one kind of non-empty folder ``--force`` may replace."""


def check_target(out: Path, run_dir: Path, cfg: TrainConfig, force: bool) -> None:
    """Refuse any ``--out`` but a new folder, an empty one, or (with ``--force``) a previous export."""
    target = out.resolve()
    protected = [("the run directory", run_dir.resolve())]
    model = Path(cfg.model).expanduser()
    if model.exists():
        protected.append(("the model folder", model.resolve()))
    for what, path in protected:
        if target == path or target in path.parents:
            raise ExportError(f"--out {out} would replace {what} {path}; give a new folder")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ExportError(f"--out {out} exists and is not a folder; give a new folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (target / EXPORT_MARKER).is_file():
        raise ExportError(f"--out {out} already holds files that are not an export of this trainer; "
                          "give a new or empty folder")
    if not force:
        raise ExportError(f"--out {out} holds a previous export; pass --force to replace it")


def export(run_dir: Path, out: Path, merge: bool, force: bool = False) -> Path:
    cfg = TrainConfig.load(run_dir / "config.json")
    out = out.expanduser().resolve()  # `--out .` names the folder itself
    check_target(out, run_dir, cfg, force)
    if merge and cfg.method != "full" and (why := merge_refusal(cfg.peft)):
        raise ExportError(f"--merge: {why}; export the adapter (without --merge)")
    source = trained_weights(run_dir, cfg)
    tokenizer = load_tokenizer(cfg)
    with atomic_dir(out, replace=force) as tmp:
        if cfg.method == "full" or not merge:
            names = [p for p in source.iterdir() if p.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model")
                     and not p.name.startswith(TRAINING_STATE)]
            for p in names:
                shutil.copy2(p, tmp / p.name)
            if cfg.method != "full" and per_expert(cfg):
                _without_dropout(tmp / "adapter_config.json")
        else:
            _merge(cfg, source, tmp)
        tokenizer.save_pretrained(str(tmp))
        kind = "full" if cfg.method == "full" else "merged" if merge else "adapter"
        write_card(run_dir, cfg, tmp, kind, folder=out, source=source)
        (tmp / EXPORT_MARKER).write_text(json.dumps({"kind": "finetune-planner export", "run": str(run_dir.resolve()),
                                                     "merged": bool(merge and cfg.method != "full")}) + "\n")
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

    precision = merged_precision(cfg)
    kwargs = dict(dtype=weight_dtype(precision), use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
    if cfg.method == "qlora":
        kwargs.update(quantization_config=quantization_config(cfg, precision), device_map={"": "cpu"})
    base = model_class(cfg).from_pretrained(cfg.model, **kwargs)
    if cfg.method == "qlora":
        base = base.dequantize()  # the 4-bit weights the adapter was trained against, in 16/32-bit
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(dest), safe_serialization=True)


def main(run: str, out: str, merge: bool = False, force: bool = False) -> int:
    run_dir = Path(run).expanduser()
    if not is_run_dir(run_dir) or not (run_dir / "config.json").is_file():
        print(f"error: {run_dir} is not a run directory of this trainer (no config.json)", file=sys.stderr)
        return 2
    try:
        written = export(run_dir, Path(out), merge, force)
    except (ConfigError, ModelError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(str(written))
    return 0


