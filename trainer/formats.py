"""Reading a dataset file and turning its rows into conversations or plain text.

``load_examples`` reads ``.jsonl``, ``.json`` (an array of objects, or JSON lines), ``.csv`` and
``.parquet`` with the ``datasets`` library (in memory, its cache in a temporary directory, so
nothing is written next to the user's data), detects the format and converts every row to an
:class:`Example`. ``trainer.data`` tokenizes them.

Formats (the detected name is returned so the caller can report it):

- ``alpaca``: ``instruction``, ``input`` (optional), ``output``, ``system`` (optional);
- ``sharegpt``: ``conversations: [{from: human|gpt|system, value}]`` (``user``/``assistant`` accepted);
- ``messages`` (OpenAI): ``messages: [{role: user|assistant|system, content}]``;
- ``text``: ``text``.

Chat formats become a list of ``{"role", "content"}`` messages. A JSON ``null``, or a column
missing from a row, counts as a missing field; an empty string is present but empty.

JSON files are parsed here first (cheap), which gives errors their line numbers and validates
every row before the library reads the file. Should the library still fail on such a file (it
reads an array with leading whitespace through pandas, which rejects a column of mixed types),
the parsed rows are used instead, keeping only the fields the format reads.

Errors are :class:`DataError`, one line, located as precisely as the file type allows: JSON lines
by physical line, a JSON array by 0-based element index ("item 3", as in ``data[3]``), CSV by row
counting the header as line 1, Parquet by 1-based row.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.dataformats import FORMAT_FIELDS, format_of

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
ROLES = ("user", "assistant", "system")
_JSON_WS = b" \t\r\n"


class DataError(ValueError):
    """A problem with the training data, as one line: ``"<file> line 7: <problem>"``.

    ``path`` is the file as given, ``line`` the 1-based physical line (JSON lines, CSV row
    counting the header as line 1; None when there is no line, e.g. a JSON array item).
    """

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None,
                 where: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = where or (f"line {line}" if line is not None else "")
        head = " ".join(x for x in (Path(path).name if path is not None else "", where) if x)
        text = f"{head}: {problem}" if head else problem
        super().__init__(" ".join(text.split()))  # always one line


class _RowProblem(Exception):
    """Raised inside row conversion; the caller adds the file and the row's location."""


@dataclass(frozen=True)
class Example:
    """One usable row: ``messages`` (chat formats) or ``text``, and where it came from."""

    where: str
    line: int | None
    messages: tuple[dict[str, str], ...] | None = None
    text: str | None = None


def detect_format(columns: Iterable[str], first_row: Mapping, *, path: str | Path | None = None) -> str:
    """Name the format of a table from its columns and first row; DataError if none fits.

    A ``messages`` or ``conversations`` column is read by its first message's keys
    (``role``/``content``: messages, ``from``/``value``: sharegpt), else by the column name.
    """
    cols = list(columns)
    found = format_of(cols, first_row)
    if found is not None:
        return found
    supported = "; ".join(f"{name} ({fields})" for name, fields in FORMAT_FIELDS.items())
    raise DataError(path, f"unknown format: columns {cols} name nothing known; supported: {supported}")


def load_examples(path: Path, declared: str = "auto") -> tuple[str, list[Example | None], int]:
    """Read ``path``; return (format, one Example per row or None when the row has nothing to learn, rows)."""
    if not path.exists():
        raise DataError(path, "no such file")
    if not path.is_file():
        raise DataError(path, "not a file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"unsupported file type '{path.suffix}'; use .jsonl, .json, .csv or .parquet")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (no rows)")
    if kind == "json":
        records, where = _scan_json(path)  # precise syntax errors, before the library sees the file
        columns = list(dict.fromkeys(k for r in records for k in r))
        fmt = declared if declared != "auto" else detect_format(columns, records[0], path=path)
        _convert_all(path, records, fmt, where)  # precise type errors too
        try:
            ds = _load(path, "json", parse_agent_traces=False)
        except DataError:
            ds = None
        if ds is None or len(ds) != len(records):  # the library balked at a file we parsed cleanly
            try:
                ds = _from_records(records, fmt)
            except Exception as exc:  # pyarrow: one line for the user
                raise DataError(path, f"cannot read JSON ({str(exc).splitlines()[0][:300]})") from exc
    else:
        kw = {}
        if kind == "csv":
            kw = {"keep_default_na": False, "converters": {i: str for i in range(len(_csv_header(path)))}}
        ds = _load(path, kind, **kw)
        where = (lambda i: (f"line {i + 2}", i + 2)) if kind == "csv" else (lambda i: (f"row {i + 1}", None))
        if len(ds) == 0:
            raise DataError(path, "no rows")
        fmt = declared if declared != "auto" else detect_format(ds.column_names, ds[0], path=path)
    return fmt, _convert_all(path, ds, fmt, where), len(ds)


# ---- reading ------------------------------------------------------------------------------------

def _scan_json(path: Path) -> tuple[list[dict], Callable[[int], tuple[str, int | None]]]:
    """Parse a JSON array or JSON lines file ourselves (cheap) to report errors by line."""
    data = path.read_bytes()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if not data.strip(_JSON_WS):
        raise DataError(path, "empty file (no rows)")
    if data.lstrip(_JSON_WS).startswith(b"["):
        try:
            items = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(path, "not valid UTF-8", line=data[:exc.start].count(b"\n") + 1) from None
        except json.JSONDecodeError as exc:
            raise DataError(path, f"malformed JSON ({exc.msg})", line=exc.lineno) from None
        except RecursionError:
            raise DataError(path, "malformed JSON (nested too deeply)") from None
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(path, f"expected a JSON object, got {_jtype(item)}", where=f"item {i}")
        if not items:
            raise DataError(path, "empty JSON array (no rows)")
        return items, lambda i: (f"item {i}", None)
    records, lines = [], []
    for number, raw in enumerate(data.splitlines(), start=1):  # \n, \r\n and \r, as the reader splits
        if not raw.strip(_JSON_WS):
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise DataError(path, "not valid UTF-8", line=number) from None
        except json.JSONDecodeError as exc:
            if not records and raw.strip(_JSON_WS) == b"{":
                raise DataError(path, "malformed JSON lines (one object per line expected; a pretty-printed "
                                      "object is not a dataset: use an array of objects)", line=number) from None
            raise DataError(path, f"malformed JSON ({exc.msg})", line=number) from None
        except RecursionError:
            raise DataError(path, "malformed JSON (nested too deeply)", line=number) from None
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, got {_jtype(obj)}", line=number)
        records.append(obj)
        lines.append(number)
    return records, lambda i: (f"line {lines[i]}", lines[i])


def _from_records(records: list[dict], fmt: str):
    """A Dataset of the already validated rows, keeping only the fields ``fmt`` reads (so that, say,
    an ``id`` column holding both numbers and strings cannot stop the run)."""
    import datasets

    fields = {"alpaca": ("instruction", "input", "output", "system"), "text": ("text",)}.get(
        fmt, ("messages", "conversations"))
    keys = ("from", "value") if fmt == "sharegpt" else ("role", "content")
    present = [f for f in fields if any(r.get(f) is not None for r in records)]
    rows = [{f: ([{k: t.get(k) for k in keys} for t in r[f]] if f in ("messages", "conversations")
                 and isinstance(r.get(f), list) else r.get(f)) for f in present} for r in records]
    return datasets.Dataset.from_list(rows)


def _csv_header(path: Path) -> list[str]:
    """The header, after checking every row has as many fields as it: pandas pads a short row
    with empty values and says nothing, so a shifted column would train silently."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise DataError(path, "empty file (no header, no rows)")
            for row in reader:
                if row and len(row) != len(header):
                    raise DataError(path, f"this row has {len(row)} field{'s' * (len(row) != 1)} but the header "
                                          f"has {len(header)}; "
                                          "quote fields that contain commas", line=reader.line_num)
    except UnicodeDecodeError:
        raise DataError(path, "not valid UTF-8") from None
    except csv.Error as exc:
        raise DataError(path, f"cannot read CSV ({exc})", line=1) from None
    return header


def _load(path: Path, kind: str, **kw: Any):
    """``datasets.load_dataset`` in memory, its cache in a temporary directory; errors -> one line."""
    import datasets

    bars_were_on, verbosity = not datasets.utils.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report the error ourselves, once
    try:
        with tempfile.TemporaryDirectory(prefix="ftp-data-") as tmp:
            return datasets.load_dataset(kind, data_files=glob.escape(str(path.resolve())), split="train",
                                         keep_in_memory=True, cache_dir=tmp, **kw)
    except Exception as exc:  # the library raises many types; the user needs one line
        root = exc  # DatasetGenerationError says nothing; its cause does
        for _ in range(8):
            nxt = root.__cause__ or (root.__context__ if "Generation" in type(root).__name__ else None)
            if nxt is None:
                break
            root = nxt
        text = (str(root).strip().splitlines() or [type(root).__name__])[0][:300]
        found = re.search(r"\bline (\d+)", text)
        if "no data" in text or "at least one example" in text:
            raise DataError(path, "no rows") from None
        raise DataError(path, f"cannot read {kind.upper()} ({text})",
                        line=int(found.group(1)) if found else None) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()


# ---- rows -> examples ---------------------------------------------------------------------------

def _convert_all(path: Path, rows: Iterable[Mapping], fmt: str, where) -> list[Example | None]:
    out: list[Example | None] = []
    for i, row in enumerate(rows):
        loc, line = where(i)
        try:
            out.append(_convert(row, fmt, loc, line))
        except _RowProblem as exc:
            raise DataError(path, str(exc), line=line, where=loc) from None
    return out


def _convert(row: Mapping, fmt: str, where: str, line: int | None) -> Example | None:
    if fmt == "text":
        text = _string(row, "text", fmt, required=True)
        return Example(where, line, text=text) if text.strip() else None
    if fmt == "alpaca":
        instruction = _string(row, "instruction", fmt, required=True)
        extra = _string(row, "input", fmt)
        output = _string(row, "output", fmt, required=True)
        system = _string(row, "system", fmt)
        messages = ([{"role": "system", "content": system}] if system.strip() else []) + [
            {"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction},
            {"role": "assistant", "content": output}]
    else:
        keys = ("from", "value") if fmt == "sharegpt" else ("role", "content")
        cols = ("conversations", "messages") if fmt == "sharegpt" else ("messages", "conversations")
        col = next((c for c in cols if row.get(c) is not None), cols[0])
        turns = row.get(col)
        if turns is None:
            raise _RowProblem(f"{fmt} row lacks '{col}'")
        if not isinstance(turns, list):
            raise _RowProblem(f"'{col}' must be a list of {{{keys[0]}, {keys[1]}}} objects, got {_jtype(turns)}")
        messages = []
        for n, turn in enumerate(turns, start=1):
            if not isinstance(turn, Mapping):
                raise _RowProblem(f"message {n} must be a {{{keys[0]}, {keys[1]}}} object, got {_jtype(turn)}")
            for key in keys:
                if turn.get(key) is None:
                    raise _RowProblem(f"message {n} lacks '{key}'")
            role, content = turn[keys[0]], turn[keys[1]]
            if fmt == "sharegpt":
                if not isinstance(role, str) or role not in SHAREGPT_ROLES:
                    raise _RowProblem(f"message {n} has from {role!r}; expected human, gpt or system")
                role = SHAREGPT_ROLES[role]
            elif not isinstance(role, str) or role not in ROLES:
                raise _RowProblem(f"message {n} has role {role!r}; expected user, assistant or system")
            messages.append({"role": role, "content": _check_str(content, f"message {n} '{keys[1]}'")})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return None  # no answer to learn from
    return Example(where, line, messages=tuple(messages))


def _string(row: Mapping, key: str, fmt: str, required: bool = False) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise _RowProblem(f"{fmt} row lacks '{key}'")
        return ""
    return _check_str(value, f"'{key}'")


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _RowProblem(f"{what} must be a string, got {_jtype(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _RowProblem(f"{what} holds an invalid unicode escape (a lone surrogate)") from None
    return value


def _jtype(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
