"""Tokenized training examples for transformers' ``Trainer``, from a dataset file.

``prepare_data(config, tokenizer)`` reads ``config.dataset`` (see ``trainer.formats`` for file
types, formats and error locations), tokenizes every row and returns :class:`PreparedData` whose
datasets have the columns ``input_ids``, ``attention_mask`` and ``labels``. Batch them with
``collate(tokenizer)`` (pads with the pad token, else EOS; labels with -100).

Prompt building and masking
---------------------------
Chat rows (alpaca, sharegpt and messages all become a list of messages) are rendered with
``tokenizer.apply_chat_template``. With ``assistant_only_loss`` every label is -100 except the
assistant's tokens; ``PreparedData.masking`` says which of these three ways found them:

``"generation"``
    The template has ``{% generation %}`` blocks: transformers'
    ``return_assistant_tokens_mask=True`` marks what the blocks enclose. When that mask has fewer
    runs of assistant tokens than the row has non-blank replies, the example is redone the
    ``prefix`` way: transformers maps the block's first and last characters to tokens with
    ``char_to_token``, which is None for a space that a byte-level tokenizer (``trim_offsets``)
    left out of every token, and then drops that turn and every later one (a reply starting with
    a space), or marks everything to the end of the sequence (a reply ending with one).
``"prefix"``
    A template without such blocks. For assistant turn ``i`` the reply's characters in the full
    rendering ``S`` run from the end of the common prefix of ``S`` and
    ``render(messages[:i], add_generation_prompt=True)`` to the end of the common prefix of ``S``
    and ``render(messages[:i+1])``: the reply plus the template's end-of-turn text (a reply that
    opens the conversation starts where its text first appears in ``S``). Tokens lying
    wholly inside a span are trained, found by the offsets of a fast tokenizer, or (slow
    tokenizers) by tokenizing ``S[:start]`` and ``S[:end]`` incrementally.
``"fallback"``
    The tokenizer has no chat template. Turns are laid out as (exactly, ``\\n`` a newline)::

        {bos}### System:\\n{system}\\n\\n### User:\\n{user}\\n\\n### Assistant:\\n{reply}{eos}\\n\\n### User:\\n...

    i.e. each turn is ``### System:`` / ``### User:`` / ``### Assistant:``, a newline and its
    content; turns are joined by a blank line; an assistant reply is followed directly by the
    EOS token; ``{bos}``/``{eos}`` are empty when the tokenizer has none. The trained span of
    each assistant turn is ``{reply}{eos}``.

Without ``assistant_only_loss`` chat labels equal ``input_ids``. ``text`` rows are
``tokenizer(text)`` (with the tokenizer's own BOS, if any) plus EOS, labels = ``input_ids``
(``masking`` and ``template`` are then ``"none"``).

Then: examples longer than ``max_seq_len`` are cut to it (``n_truncated`` counts them, also those
then skipped); a row with nothing to learn (no non-blank assistant reply, blank text, or every
label -100 after truncation) is skipped and counted in ``n_skipped``; if none is left, DataError.
``val_split`` holds out ``max(1, round(n * val_split))`` examples chosen with ``random.Random(seed)``.
With ``packing`` each split is concatenated (an EOS between examples that do not already end
with one, labelled like the token before it) and cut into blocks of exactly ``max_seq_len``; the
last block is padded (attention 0, label -100); blocks without a trained label are dropped.
Packed examples attend to each other within a block (no cross-example masking).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.samples import SampleLengths
from trainer.config import TrainConfig
from trainer.formats import DataError, Example, detect_format, load_examples

if TYPE_CHECKING:
    import datasets

__all__ = ["DataError", "PreparedData", "collate", "detect_format", "held_out", "prepare_data", "prompt_text",
           "usable_rows"]

IGNORE = -100
_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}


@dataclass(frozen=True)
class PreparedData:
    train: datasets.Dataset
    """Columns ``input_ids``, ``attention_mask``, ``labels`` (-100 where there is no loss)."""
    eval: datasets.Dataset | None
    format: str
    """The detected or declared format: alpaca, sharegpt, messages or text."""
    template: str
    """``chat_template`` or ``fallback`` (chat formats); ``none`` for text."""
    n_examples: int
    """Rows read from the file."""
    n_truncated: int
    n_skipped: int
    """Rows with nothing to learn."""
    masking: str = "none"
    """How assistant tokens were found: ``generation``, ``prefix``, ``fallback`` or ``none``."""
    lengths: SampleLengths | None = None
    """The training split's tokens per example, unpacked (padded per micro-batch: what the planner
    predicts the run's memory and time with); None when packed, every block ``max_seq_len`` long."""


@dataclass(frozen=True)
class _Usable:
    """The rows of ``config.dataset`` that have tokens to learn from, tokenized and truncated."""

    format: str
    mode: str
    examples: list[Example]
    rows: list[tuple[list[int], list[int]]]
    n_examples: int
    n_truncated: int
    n_skipped: int


def _usable(config: TrainConfig, tokenizer: Any) -> _Usable:
    path = Path(config.dataset).expanduser()
    fmt, examples, n_rows = load_examples(path, config.data_format)
    template = _chat_template(tokenizer)
    mode = ("none" if fmt == "text" else "fallback" if template is None
            else "generation" if _GENERATION_BLOCK.search(template) else "prefix")
    limit = config.max_seq_len
    kept: list[Example] = []
    rows: list[tuple[list[int], list[int]]] = []
    n_truncated = n_skipped = 0
    for ex in examples:
        if ex is None:
            n_skipped += 1
            continue
        ids, labels = _encode(tokenizer, ex, mode, config.assistant_only_loss, path)
        if len(ids) > limit:
            ids, labels, n_truncated = ids[:limit], labels[:limit], n_truncated + 1
        if all(label == IGNORE for label in labels):
            n_skipped += 1
            continue
        kept.append(ex)
        rows.append((ids, labels))
    if not rows:
        cut = f", or the reply was cut off by max_seq_len={limit}" if n_truncated else ""
        raise DataError(path, f"no example has tokens to learn from ({n_skipped} of {n_rows} rows skipped: "
                              f"no assistant reply or empty text{cut})")
    return _Usable(fmt, mode, kept, rows, n_rows, n_truncated, n_skipped)


def usable_rows(config: TrainConfig, tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of every example with tokens to learn from, truncated at max_seq_len,
    before the validation split and packing."""
    return _usable(config, tokenizer).rows


def held_out(config: TrainConfig, tokenizer: Any) -> tuple[str, list[tuple[Example, list[int], list[int]]]]:
    """The examples the run held out for evaluation (``"validation"``), each with its token ids and
    labels as training saw them; a run without a validation split gives its training examples
    (``"train"``), in file order."""
    usable = _usable(config, tokenizer)
    path = Path(config.dataset).expanduser()
    indices = _held_indices(len(usable.rows), config.val_split, config.seed, path)
    split = "validation" if indices else "train"
    chosen = sorted(indices) if indices else range(len(usable.rows))
    return split, [(usable.examples[i], *usable.rows[i]) for i in chosen]


def prepare_data(config: TrainConfig, tokenizer: Any) -> PreparedData:
    """Read, convert, tokenize, truncate, split and (optionally) pack ``config.dataset``."""
    path = Path(config.dataset).expanduser()
    usable = _usable(config, tokenizer)
    fmt, mode, rows = usable.format, usable.mode, usable.rows
    n_rows, n_truncated, n_skipped = usable.n_examples, usable.n_truncated, usable.n_skipped
    limit, eos_id = config.max_seq_len, tokenizer.eos_token_id
    train, held = _split(rows, config.val_split, config.seed, path)
    pad_id = _pad_id(tokenizer)
    lengths = None if config.packing else SampleLengths.of([len(ids) for ids, _ in train])
    if config.packing:
        train = _pack(train, limit, eos_id, pad_id)
        held = _pack(held, limit, eos_id, pad_id) if held is not None else None
    else:
        train = [(ids, labels, [1] * len(ids)) for ids, labels in train]
        held = [(ids, labels, [1] * len(ids)) for ids, labels in held] if held is not None else None
    return PreparedData(train=_to_dataset(train), eval=_to_dataset(held) if held else None, format=fmt,
                        template={"none": "none", "fallback": "fallback"}.get(mode, "chat_template"),
                        n_examples=n_rows, n_truncated=n_truncated, n_skipped=n_skipped, masking=mode,
                        lengths=lengths)


def collate(tokenizer: Any) -> _Collator:
    """A data collator for ``Trainer(data_collator=...)``: pads ``input_ids`` with the pad token
    (EOS when the tokenizer has none, else 0), ``attention_mask`` with 0 and ``labels`` with -100,
    on the tokenizer's ``padding_side``; returns int64 torch tensors. The tokenizer is not modified.
    (``DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)`` does the same
    once ``tokenizer.pad_token`` is set.)"""
    return _Collator(_pad_id(tokenizer), getattr(tokenizer, "padding_side", "right") == "left")


@dataclass(frozen=True)
class _Collator:
    pad_id: int
    left: bool

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            fill = width - len(f["input_ids"])
            for key, value in (("input_ids", self.pad_id), ("attention_mask", 0), ("labels", IGNORE)):
                seq = list(f[key]) if key in f else ([1] * len(f["input_ids"]) if key == "attention_mask"
                                                     else list(f["input_ids"]))
                batch[key].append([value] * fill + seq if self.left else seq + [value] * fill)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


# ---- tokenization -------------------------------------------------------------------------------

def _chat_template(tokenizer: Any) -> str | None:
    try:
        template = tokenizer.get_chat_template()
    except (ValueError, AttributeError, TypeError, KeyError):
        return None
    return template if isinstance(template, str) and template.strip() else None


def _encode(tok: Any, ex: Example, mode: str, assistant_only: bool, path: Path) -> tuple[list[int], list[int]]:
    if ex.text is not None:
        ids = [int(i) for i in tok(ex.text)["input_ids"]]
        if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
            ids.append(tok.eos_token_id)
        return ids, list(ids)
    messages = [dict(m) for m in ex.messages or ()]
    try:
        if mode == "generation":
            enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
            ids, mask = [int(i) for i in enc["input_ids"]], [bool(m) for m in enc["assistant_masks"]]
            replies = sum(1 for m in messages if m["role"] == "assistant" and m["content"].strip())
            if sum(1 for i, m in enumerate(mask) if m and not (i and mask[i - 1])) < replies:
                mode = "prefix"  # transformers lost a turn: see "generation" in the module docstring
        if mode != "generation":
            text, spans = _template_spans(tok, messages) if mode == "prefix" else _fallback_layout(tok, messages)
            ids, mask = _encode_spans(tok, text, spans)
    except Exception as exc:  # a template is code: it may raise anything (e.g. "roles must alternate")
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(path, f"chat template failed ({problem})", line=ex.line, where=ex.where) from exc
    labels = [t if m else IGNORE for t, m in zip(ids, mask)] if assistant_only else list(ids)
    return ids, labels


def prompt_text(tok: Any, messages: list[dict]) -> str:
    """What the model is given to answer ``messages`` (ending with a user turn), laid out as the
    run trained: the tokenizer's chat template with its generation prompt, else the fallback
    layout up to the assistant header."""
    if _chat_template(tok) is not None:
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    text, _ = _fallback_layout(tok, messages)
    return text + "\n\n" + _HEADERS["assistant"]


def _template_spans(tok: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    def render(msgs: list[dict], prompt: bool = False) -> str:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    text, spans = render(messages), []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(render(messages[:i], True), text) if i else max(text.find(message["content"]), 0)
        end = _common_prefix(render(messages[:i + 1]), text)
        if end > start:
            spans.append((start, end))
    return text, spans


def _fallback_layout(tok: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    text, eos, spans = tok.bos_token or "", tok.eos_token or "", []
    for n, message in enumerate(messages):
        text += ("\n\n" if n else "") + _HEADERS[message["role"]]
        if message["role"] == "assistant":
            spans.append((len(text), len(text) + len(message["content"]) + len(eos)))
            text += message["content"] + eos
        else:
            text += message["content"]
    return text, spans


def _encode_spans(tok: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` and, per token, whether it lies wholly inside one of the char spans."""
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = [any(s <= a < e and b <= e for s, e in spans) for a, b in enc["offset_mapping"]]
        return [int(i) for i in enc["input_ids"]], mask
    ids = [int(i) for i in tok(text, add_special_tokens=False)["input_ids"]]
    mask = [False] * len(ids)
    for s, e in spans:  # no offsets: tokenize each prefix; its tokens that agree with ``ids`` lie inside it
        head = [int(i) for i in tok(text[:s], add_special_tokens=False)["input_ids"]]
        a = _common_prefix(head, ids)
        a += a < len(head)  # a token straddling the start is not the reply's
        b = _common_prefix([int(i) for i in tok(text[:e], add_special_tokens=False)["input_ids"]], ids)
        mask[a:b] = [True] * len(mask[a:b])
    return ids, mask


def _common_prefix(a: Sequence, b: Sequence) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---- split, packing, datasets -------------------------------------------------------------------

def _held_indices(n: int, fraction: float, seed: int, path: Path) -> set[int]:
    if fraction <= 0:
        return set()
    if n < 2:
        raise DataError(path, f"val_split={fraction} needs at least 2 usable examples, found {n}")
    k = min(n - 1, max(1, round(n * fraction)))
    return set(random.Random(seed).sample(range(n), k))


def _split(rows: list, fraction: float, seed: int, path: Path) -> tuple[list, list | None]:
    held = _held_indices(len(rows), fraction, seed, path)
    if not held:
        return rows, None
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _pack(rows: list, size: int, eos_id: int | None, pad_id: int) -> list[tuple[list[int], list[int], list[int]]]:
    ids: list[int] = []
    labels: list[int] = []
    for row_ids, row_labels in rows:
        if ids and eos_id is not None and ids[-1] != eos_id:
            ids.append(eos_id)
            labels.append(eos_id if labels[-1] != IGNORE else IGNORE)
        ids += row_ids
        labels += row_labels
    blocks = []
    for start in range(0, len(ids), size):
        block_ids, block_labels = ids[start:start + size], labels[start:start + size]
        if all(label == IGNORE for label in block_labels):
            continue
        fill = size - len(block_ids)
        blocks.append((block_ids + [pad_id] * fill, block_labels + [IGNORE] * fill,
                       [1] * len(block_ids) + [0] * fill))
    return blocks


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _to_dataset(rows: list[tuple[list[int], list[int], list[int]]]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict({"input_ids": [r[0] for r in rows], "attention_mask": [r[2] for r in rows],
                                       "labels": [r[1] for r in rows]})
