"""``python -m trainer generate`` in a QProcess: requests in as JSON lines, events out.

The same pipes, decoding and exit handling as a training run (``RunProcess``); what differs is
what goes in: requests (trainer/protocol.py ``REQUEST_OPS``) and the words ``stop``/``quit``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from planner.gui.common.run_process import RunProcess


class GenerateProcess(RunProcess):
    def open(self, run_dir: str | Path | None = None, model: str | Path | None = None,
             adapters: Iterable[str] = (), device: str = "auto") -> None:
        """Load a run (and optional ``NAME=DIR`` adapters of its base), or a model on its own."""
        args = ["generate", "--device", device]
        if run_dir:
            args += ["--run", str(run_dir)]
        if model:
            args += ["--model", str(model)]
        for adapter in adapters:
            args += ["--adapter", adapter]
        self._launch(args, {})

    def request(self, op: str, rid: str, **fields: Any) -> bool:
        return self._write_line(json.dumps({"op": op, "id": rid, **fields}))

    def stop_generating(self) -> bool:
        return self._write_line("stop")

    def quit(self) -> bool:
        """End the session: the process exits once its current answer is done."""
        return self._write_line("quit")
