"""Which training-data format a file's first row is in: alpaca, sharegpt, messages or text.

Shared by the trainer (which loads the data) and the app (which previews it before a run);
stdlib only, so the planner may use it without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FORMAT_FIELDS = {"alpaca": "instruction, input, output", "sharegpt": "conversations: from/value",
                 "messages": "messages: role/content", "text": "text"}


def format_of(columns: Iterable[str], first_row: Any) -> str | None:
    """The format the columns (and the first row's turns) name, or None when they name none.

    A ``messages`` or ``conversations`` column is told apart by its first turn's keys, since
    both spellings appear with both turn layouts in the wild.
    """
    cols = list(columns)
    for col in ("messages", "conversations"):
        if col in cols:
            turns = first_row.get(col) if isinstance(first_row, Mapping) else None
            if isinstance(turns, list) and turns and isinstance(turns[0], Mapping):
                if "role" in turns[0] or "content" in turns[0]:
                    return "messages"
                if "from" in turns[0] or "value" in turns[0]:
                    return "sharegpt"
            return "messages" if col == "messages" else "sharegpt"
    if "instruction" in cols:
        return "alpaca"
    if "text" in cols:
        return "text"
    return None
