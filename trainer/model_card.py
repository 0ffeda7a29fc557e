"""The model card of an export: ``README.md`` (and ``loss.svg``) written into the export folder.

Pure Python on the run directory's own files, never the dataset or the weights: the run's
settings (``config.json``), its summary (``run.json``: steps, losses, measured vs predicted
memory) and its history (``metrics.jsonl``: the detected data format and example count of the
``start`` event, the losses of the ``step`` and ``eval`` events). What a run did not record is
said to be "not recorded".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.units import GiB, MiB, fmt_bytes
from trainer.config import TrainConfig, setup_of
from trainer.loss_figure import loss_svg
from trainer.protocol import ProtocolError, decode
from trainer.rundir import METRICS, SUMMARY, read_json

CARD, FIGURE = "README.md", "loss.svg"
NOT_RECORDED = "not recorded"
METHOD_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
KINDS = ("adapter", "merged", "full")
"""What an export holds: a peft adapter, the adapter merged into its base, or a fully fine-tuned model."""


@dataclass(frozen=True)
class History:
    """What ``metrics.jsonl`` says about the run (empty when it cannot be read)."""

    start: dict[str, Any] = field(default_factory=dict)
    """The first ``start`` event's fields (a resumed run's later sessions read the same data)."""
    train: list[tuple[int, float]] = field(default_factory=list)
    """(step, loss), one per step: a resumed run's repeated steps keep the latest session's value."""
    evals: list[tuple[int, float]] = field(default_factory=list)
    """(step, eval_loss)."""


def _events(metrics: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with open(metrics, "rb") as fh:
            for raw in fh:
                if not any(k in raw for k in (b'"event":"start"', b'"event":"step"', b'"event":"eval"')):
                    continue
                try:
                    event = decode(raw.decode("utf-8", errors="replace"))
                except ProtocolError:
                    continue  # a torn last line, or a hand edit
                yield event.kind, dict(event.fields)
    except OSError:
        return


def read_history(run_dir: Path) -> History:
    start: dict[str, Any] = {}
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    for kind, fields in _events(run_dir / METRICS):
        if kind == "start" and not start:
            start = fields
        series, key = (train, "loss") if kind == "step" else (evals, "eval_loss")
        step, loss = fields.get("step"), fields.get(key)
        if kind != "start" and isinstance(step, int) and isinstance(loss, (int, float)):
            series[step] = float(loss)
    return History(start, sorted(train.items()), sorted(evals.items()))


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return NOT_RECORDED
    return fmt_bytes(n, GiB) if n >= GiB else fmt_bytes(n, MiB)


def _or(value: Any, fmt: str = "{}") -> str:
    return NOT_RECORDED if value is None else fmt.format(value)


def load_snippet(kind: str, cfg: TrainConfig, folder: str) -> str:
    """Python that loads the export the way it was written."""
    if kind != "adapter":
        return ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"model = AutoModelForCausalLM.from_pretrained({folder!r})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({folder!r})\n")
    code = ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({cfg.model!r}), {folder!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({folder!r})\n")
    if cfg.method == "qlora":
        code += (f"# trained on the {cfg.quant} 4-bit base: to run exactly that base, load it with\n"
                 f"# quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type={cfg.quant!r}, "
                 f"bnb_4bit_use_double_quant={cfg.double_quant})\n" if cfg.quant != "int8" else
                 "# trained on the 8-bit (LLM.int8) base: BitsAndBytesConfig(load_in_8bit=True) loads that base\n")
    return code


def method_name(cfg: TrainConfig) -> str:
    """``QLoRA``, ``LoRA``, or the adapter the run trained instead (``IA3 on a 4-bit base``)."""
    if cfg.method == "full" or (cfg.peft == "lora" and not cfg.use_dora):
        return METHOD_NAMES[cfg.method]
    adapter = setup_of(cfg, "fp32").adapter_name
    return adapter + (f" on a {'8' if cfg.quant == 'int8' else '4'}-bit base" if cfg.method == "qlora" else "")


def _what(kind: str, cfg: TrainConfig) -> str:
    if kind == "adapter":
        return (f"the {method_name(cfg)} adapter only (peft layout): it needs its base model "
                f"`{cfg.model}` to run")
    if kind == "merged":
        bits = "8-bit" if cfg.quant == "int8" else "4-bit"
        onto = f" (dequantized from the {bits} base it was trained against)" if cfg.method == "qlora" else ""
        return f"the {method_name(cfg)} adapter merged into the base weights{onto}: a plain transformers model"
    return "a fully fine-tuned model: a plain transformers model"


def _table(rows: list[tuple[str, str]], head: tuple[str, str] = ("setting", "value")) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _adapter_rows(cfg: TrainConfig) -> list[tuple[str, str]]:
    """The adapter's own settings, named as the run trained it (planner.options.PEFTS)."""
    if cfg.peft in ("prompt", "prefix"):
        return [("adapter", f"{cfg.peft} tuning, {cfg.virtual_tokens} virtual tokens")]
    if cfg.peft == "ia3":
        targets = "peft's defaults" if tuple(cfg.lora_targets) == ("all-linear",) else ", ".join(cfg.lora_targets)
        return [("adapter", f"IA3, adapter dtype {cfg.adapter_dtype}"), ("IA3 targets", targets)]
    setup = setup_of(cfg, "fp32")
    name = setup.adapter_name
    rank = (f"r {setup.adapter_rank} pruned to {cfg.lora_r} on average" if cfg.peft == "adalora"
            else f"r {cfg.lora_r}")
    return [(name, f"{rank}, alpha {cfg.lora_alpha}, dropout {cfg.lora_dropout}, adapter dtype {cfg.adapter_dtype}"),
            (f"{name} targets", ", ".join(cfg.lora_targets))]


def settings_rows(cfg: TrainConfig, summary: dict[str, Any], start: dict[str, Any]) -> list[tuple[str, str]]:
    ran = [v for v in (start.get("precision"), start.get("device")) if v]
    rows = [("base model", f"`{cfg.model}`"), ("method", cfg.method)]
    if cfg.method == "qlora":
        rows.append(("quantization", cfg.quant + (", double quant" if cfg.double_quant else "")))
    if cfg.method != "full":
        rows += _adapter_rows(cfg)
        if cfg.modules_to_save:
            rows.append(("modules saved whole", ", ".join(cfg.modules_to_save)))
    global_batch = cfg.batch_size * cfg.gradient_accumulation_steps * cfg.num_processes
    rows += [("precision", cfg.precision + (f" (ran as {' on '.join(ran)})" if ran else "")),
             ("optimizer", cfg.optimizer + (", stepped in backward" if cfg.optimizer_in_backward else "")),
             ("batch", f"{cfg.batch_size} per device x {cfg.gradient_accumulation_steps} accumulation x "
                       f"{cfg.num_processes} process(es) = {global_batch}"),
             ("max_seq_len", f"{cfg.max_seq_len}" + (", packed" if cfg.packing else "")),
             ("steps", f"{_or(summary.get('steps'))} trained"
                       + (f" of {start['max_steps']} planned" if start.get("max_steps") else "")),
             ("learning rate", f"{cfg.learning_rate:g}, {cfg.lr_scheduler_type} schedule, "
                               f"{cfg.warmup_steps} warmup steps"),
             ("gradient checkpointing", "on" if cfg.grad_checkpointing else "off"),
             ("run status", f"{_or(summary.get('status'))}, {_or(summary.get('runtime_s'), '{:.0f}')} s")]
    return rows


def memory_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    cuda = summary.get("peak_kind") == "cuda_max_allocated"
    what = ("CUDA `max_memory_allocated`" if cuda else "CPU live tensor bytes (the trainer's own count)"
            ) if summary else NOT_RECORDED
    phase = summary.get("peak_alloc_phase")
    ratio = summary.get("peak_ratio")
    shape = (summary.get("peak_batch_size"), summary.get("peak_seq_len"))
    rows = [("what was measured", what),
            ("measured peak allocated", _size(summary.get("peak_alloc_bytes")) + (f" ({phase})" if phase else "")),
            ("predicted at that batch", _size(summary.get("predicted_at_peak_bytes"))
             + (f" ({shape[0]} x {shape[1]} tokens)" if None not in shape else "")),
            ("measured / predicted", _or(ratio, "{:.3f}")),
            ("predicted peak (max_seq_len batch)", _size(summary.get("predicted_peak_bytes")))]
    if cuda and summary.get("peak_reserved_bytes"):
        rows.append(("measured peak reserved", _size(summary.get("peak_reserved_bytes"))))
    if cuda and summary.get("peak_device_bytes"):
        rows.append(("GPU memory used (NVML, every process)", _size(summary["peak_device_bytes"])))
    if not cuda and summary.get("peak_measured_bytes"):
        rows.append(("host peak RSS (Python, libraries and data too)", _size(summary["peak_measured_bytes"])))
    return rows


def card_text(kind: str, cfg: TrainConfig, summary: dict[str, Any], history: History, folder: str,
              source: str, figure: bool) -> str:
    library = "peft" if kind == "adapter" else "transformers"
    local = Path(cfg.model).expanduser().exists()
    front = ["---", f"library_name: {library}"] + ([] if local else [f"base_model: {json.dumps(cfg.model)}"])
    front += ["tags:", "- finetune-planner", f"- {cfg.method}", "---", ""]
    name = Path(cfg.model).name if local else cfg.model
    start = history.start
    examples = start.get("examples")
    skipped = start.get("skipped")
    lines = front + [f"# `{name}`, fine-tuned ({method_name(cfg)})", "",
                     f"This folder holds {_what(kind, cfg)}. Exported by `python -m trainer export` from "
                     f"`{source}`.", "", "## How to load", "", "```python", load_snippet(kind, cfg, folder).rstrip(),
                     "```", "", "## Training settings", ""]
    lines += _table(settings_rows(cfg, summary, start))
    lines += ["", "## Data", ""]
    lines += _table([("dataset", f"`{Path(cfg.dataset).name}`"),
                     ("format", _or(start.get("data_format"), "{} (as the trainer read it)")
                      if cfg.data_format == "auto" else f"{cfg.data_format} (declared)"),
                     ("examples", _or(examples, "{} rows read") + (f", {skipped} skipped" if skipped else "")),
                     ("validation split", f"{cfg.val_split:g}" if cfg.val_split else "none")], head=("data", "value"))
    lines += ["", "## Loss", ""]
    if figure:
        lines += ["![loss](loss.svg)", ""]
    last_eval = history.evals[-1] if history.evals else None
    lines += [f"Final training loss: {_or(summary.get('final_loss'), '{:.4f}')}"
              + (f"; last eval loss {last_eval[1]:.4f} at step {last_eval[0]}" if last_eval else "")
              + ("" if figure else "; no training step recorded, so no curve") + ".", ""]
    lines += ["## Memory: measured vs predicted", ""]
    lines += _table(memory_rows(summary), head=("memory", "value"))
    return "\n".join(lines) + "\n"


def write_card(run_dir: Path, cfg: TrainConfig, dest: Path, kind: str, folder: Path, source: Path) -> None:
    """Write ``README.md`` (and ``loss.svg`` when the run logged a step) into ``dest``, a folder
    that will be renamed to ``folder`` (the path the card's load snippet names)."""
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {KINDS}")
    summary = read_json(run_dir / SUMMARY)
    history = read_history(run_dir)
    series = [("train loss", history.train), ("eval loss", history.evals)]
    if history.train or history.evals:
        (dest / FIGURE).write_text(loss_svg(series), encoding="utf-8")
    text = card_text(kind, cfg, summary, history, str(folder), str(source.resolve()),
                     figure=bool(history.train or history.evals))
    (dest / CARD).write_text(text, encoding="utf-8")
