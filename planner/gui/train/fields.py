"""The Train page's form as data: validation, the run directory's name, the config file, a dataset peek.

Qt-free. The config is checked by ``TrainConfig`` itself and the run directory by
``trainer.rundir`` (both contract modules, DESIGN.md's layering rule 3): the form says exactly
what the trainer would, beside the field at fault, before anything is launched.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from planner.dataformats import FORMAT_FIELDS, format_of
from trainer.config import ConfigError, TrainConfig
from trainer.rundir import check_new

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
PEEK_BYTES = 256 * 1024
"""The dataset preview reads at most this much: a 50 GB file previews as fast as a small one."""


@dataclass(frozen=True)
class FieldError:
    field: str
    """The TrainConfig field at fault (picks the label beside the widget); "" for the whole config."""
    message: str


def validate(fields: Mapping[str, Any]) -> FieldError | None:
    """The first problem with the fields, in the trainer's words; None when fine."""
    try:
        TrainConfig.from_dict(dict(fields))
    except ConfigError as exc:
        return FieldError(exc.field, str(exc))
    dataset = Path(str(fields["dataset"])).expanduser()
    if dataset.suffix.lower() not in DATA_SUFFIXES:
        return FieldError("dataset", f"dataset: unsupported file type '{dataset.suffix}'; "
                                     "use .jsonl, .json, .csv or .parquet")
    if not dataset.is_file():
        return FieldError("dataset", f"dataset: {dataset} does not exist")
    peek = peek_dataset(dataset)
    if peek.problem and fields.get("data_format", "auto") == "auto":
        return FieldError("dataset", f"dataset: {dataset.name}: {peek.problem}")
    model = str(fields["model"]).strip()
    folder = Path(model).expanduser()
    if _looks_local(model) and not folder.exists():
        return FieldError("model", f"model: no folder {model}")
    if folder.is_dir() and not (folder / "config.json").is_file():
        return FieldError("model", f"model: {model} has no config.json; point at a Hugging Face model folder")
    problem = check_new(Path(str(fields["output_dir"])).expanduser())
    if problem:
        return FieldError("output_dir", problem)
    return None


def _looks_local(model: str) -> bool:
    # A Hub id is "org/name" or "name"; a leading /, ~ or ., a backslash, a drive letter or a
    # second slash can only be a folder the user meant.
    return (model.startswith(("/", "~", ".")) or "\\" in model or model.count("/") > 1
            or bool(re.match(r"^[A-Za-z]:", model)))


def resolve_paths(fields: Mapping[str, Any], runs_root: Path) -> dict[str, Any]:
    """Absolute paths: the trainer runs in the project root, not where the app was started.
    A relative run directory lives under the runs root."""
    out = dict(fields)
    output = str(out.get("output_dir", "")).strip()
    if output:
        path = Path(output).expanduser()
        out["output_dir"] = str(path if path.is_absolute() else runs_root.expanduser() / path)
    dataset = str(out.get("dataset", "")).strip()
    if dataset:
        out["dataset"] = str(Path(dataset).expanduser().absolute())
    model = str(out.get("model", "")).strip()
    if model and (_looks_local(model) or Path(model).expanduser().exists()):
        out["model"] = str(Path(model).expanduser().absolute())
    return out


def parse_number(text: str) -> float | str:
    """A number typed into a line edit; the raw text when it is not one (validation names it)."""
    try:
        return float(text.strip())
    except ValueError:
        return text


def config_text(fields: Mapping[str, Any]) -> str:
    """The exact JSON the trainer reads (TrainConfig.to_json's layout): what the preview shows."""
    return json.dumps(dict(fields), indent=2) + "\n"


def launch_file(text: str) -> Path:
    """The config handed to ``trainer run --config``, in a private temporary file the page removes
    once the trainer ended: the trainer keeps its own copy (``config.json`` in the run directory),
    and nothing beside the run directory is written."""
    fd, name = tempfile.mkstemp(prefix="finetune-launch-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(name)


def model_slug(model: str) -> str:
    """``meta-llama/Llama-2-7b-hf`` -> ``Llama-2-7b-hf``; a folder -> its name; safe for a path."""
    name = Path(model.strip().rstrip("/\\")).name or "model"
    if name == "model" and Path(model).parent.name:  # make-demo's DIR/model: name it after DIR
        name = Path(model.strip().rstrip("/\\")).parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def new_run_dir(root: Path, model: str, method: str, now: datetime | None = None) -> Path:
    """``<root>/<model>-<method>-<YYYYmmdd-HHMMSS>``, with -2, -3... if that name is taken."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{model_slug(model)}-{method}-{stamp}"
    candidate, n = root / base, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate


# ---- dataset peek ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetPeek:
    format: str | None
    """alpaca | sharegpt | messages | text, or None when it cannot be told from the first rows."""
    examples: tuple[str, ...]
    """The first rows, each shortened to a few readable lines."""
    note: str = ""
    """Why there is no format or preview (the trainer has the last word when it loads the file)."""
    problem: str | None = None
    """Set when the first rows already show the trainer will refuse the file (unreadable, no
    rows, no known format): Start is refused with it rather than launching a run that fails."""


def detect_format(row: Mapping[str, Any]) -> str | None:
    """The trainer's rules (trainer.formats.detect_format), on the first row only."""
    return format_of(list(row), row)


def _short(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render_example(row: Mapping[str, Any], fmt: str | None) -> str:
    if fmt in ("messages", "sharegpt"):
        turns = row.get("messages" if fmt == "messages" else "conversations") or []
        role, content = ("role", "content") if fmt == "messages" else ("from", "value")
        return "\n".join(f"{t.get(role, '?')}: {_short(t.get(content, ''))}" for t in turns[:4]
                         if isinstance(t, Mapping))
    if fmt == "alpaca":
        parts = [f"{k}: {_short(row[k])}" for k in ("system", "instruction", "input", "output") if row.get(k)]
        return "\n".join(parts)
    if fmt == "text":
        return _short(row.get("text", ""), 320)
    return _short(json.dumps(row, ensure_ascii=False), 320)


def _rows(path: Path, n: int) -> list[dict[str, Any]]:
    with open(path, "rb") as fh:
        head = fh.read(PEEK_BYTES).decode("utf-8", errors="replace")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [dict(r) for _, r in zip(range(n), csv.DictReader(io.StringIO(head)))]
    stripped = head.lstrip()
    if suffix == ".json" and stripped.startswith("["):
        rows, decoder, pos = [], json.JSONDecoder(), 1
        while len(rows) < n:
            while pos < len(stripped) and stripped[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(stripped) or stripped[pos] == "]":
                break
            item, pos = decoder.raw_decode(stripped, pos)
            rows.append(item)
        return rows
    rows = []
    for number, line in enumerate(head.splitlines(), start=1):
        if len(rows) == n:
            break
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ValueError(f"line {number}: malformed JSON") from None
    return rows


def peek_dataset(path: str | Path, n: int = 3) -> DatasetPeek:
    """Format and first ``n`` examples from the first few rows only (cheap); never raises."""
    p = Path(path).expanduser()
    if not str(path).strip():
        return DatasetPeek(None, (), "no dataset chosen")
    if not p.is_file():
        return DatasetPeek(None, (), "no such file")
    if p.suffix.lower() == ".parquet":
        return DatasetPeek(None, (), "Parquet: the trainer detects the format when it loads the file")
    try:
        rows = _rows(p, n)
    except (OSError, ValueError) as exc:
        return DatasetPeek(None, (), f"cannot preview: {exc}", problem=f"cannot be read ({exc})")
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return DatasetPeek(None, (), "no rows in the first part of the file", problem="no rows to train on")
    fmt = detect_format(rows[0])
    note = "" if fmt else ("unknown format; supported: "
                           + "; ".join(f"{k} ({v})" for k, v in FORMAT_FIELDS.items()))
    return DatasetPeek(fmt, tuple(render_example(r, fmt) for r in rows), note, problem=note or None)
