"""The training-event protocol: JSON lines from the trainer, commands to it (DESIGN.md).

Standard library only: this is the one trainer module the planner (and its GUI) imports.

Every event is one line ``{"v": 1, "event": KIND, "t": seconds_since_start, ...}`` with flat
scalar fields. Commands go the other way, one word per line on stdin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERSION = 1

# The fields each event kind must carry (more may follow; readers ignore what they don't know).
REQUIRED: dict[str, tuple[str, ...]] = {
    "start": ("model", "method", "params_total", "params_trainable", "max_steps", "run_dir",
              "predicted_peak_bytes"),
    "step": ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "peak_alloc_bytes",
             "peak_reserved_bytes", "rss_bytes"),
    "eval": ("step", "eval_loss"),
    "checkpoint": ("step", "path"),
    "end": ("status", "steps", "runtime_s", "output_dir"),
    "error": ("type", "message", "hint"),
    # `python -m trainer generate` (the Try page): a session that loads once and answers requests
    "ready": ("model", "adapters", "device", "load_s", "weights_bytes"),
    "token": ("id", "text"),
    "done": ("id", "status", "new_tokens", "ttft_s", "tokens_per_s"),
    "example": ("id", "index", "split", "messages_json", "reference"),
    "score": ("id", "adapter", "examples", "loss", "token_accuracy"),
}
# Optional memory fields (issue 16), None where not measured:
# - step: device_used_bytes (CUDA only: NVML's used memory of the run's GPU, every process on it);
#   peak_alloc_bytes / peak_reserved_bytes are the run's running peaks on both devices.
# - end (and run.json): peak_alloc_bytes, peak_alloc_phase ("forward", "backward", "optimizer step",
#   or on CUDA "outside a step"), peak_ratio, peak_forward_bytes, peak_backward_bytes,
#   peak_optimizer_bytes; on CUDA also peak_reserved_bytes and peak_device_bytes (NVML's largest).
# Optional generate fields: ready carries the model's generation_config defaults (temperature,
# top_p, max_new_tokens; None where unset), chat ("template", "fallback" or "none"); done carries
# prompt_tokens and peak_alloc_bytes (CUDA always, the CPU when the request asked to measure);
# error carries the request's id when one failed.
END_STATUSES = ("completed", "stopped", "cancelled", "failed")
ERROR_TYPES = ("oom", "data", "config", "model", "io", "internal")
"""``io``: the run directory's filesystem failed (disk full, read-only, the folder removed mid-run)."""
COMMANDS = ("stop", "cancel", "checkpoint")

Scalar = str | int | float | bool | None


class ProtocolError(ValueError):
    """A line or event that does not follow the protocol."""


@dataclass(frozen=True)
class Event:
    kind: str
    t: float
    fields: Mapping[str, Scalar]

    def __getitem__(self, key: str) -> Scalar:
        return self.fields[key]

    def get(self, key: str, default: Scalar = None) -> Scalar:
        return self.fields.get(key, default)


def _check(kind: str, fields: Mapping[str, Any]) -> None:
    if kind not in REQUIRED:
        raise ProtocolError(f"unknown event kind {kind!r}")
    missing = [k for k in REQUIRED[kind] if k not in fields]
    if missing:
        raise ProtocolError(f"{kind} event lacks {', '.join(missing)}")
    for key, value in fields.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ProtocolError(f"{kind}.{key} must be a scalar, got {type(value).__name__}")
    if kind == "end" and fields["status"] not in END_STATUSES:
        raise ProtocolError(f"end.status must be one of {END_STATUSES}, got {fields['status']!r}")
    if kind == "error" and fields["type"] not in ERROR_TYPES:
        raise ProtocolError(f"error.type must be one of {ERROR_TYPES}, got {fields['type']!r}")


def _json_safe(value: Scalar) -> Scalar:
    # JSON has no NaN/Infinity; a diverged loss is reported as null rather than breaking readers.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode(kind: str, t: float, **fields: Scalar) -> str:
    """One event as a JSON line (no trailing newline)."""
    _check(kind, fields)
    body = {"v": VERSION, "event": kind, "t": round(float(t), 3)}
    body.update({k: _json_safe(v) for k, v in fields.items()})
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def decode(line: str) -> Event:
    """Parse one line; raises :class:`ProtocolError` for anything that is not a valid event."""
    try:
        body = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("an event must be a JSON object")
    if body.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {body.get('v')!r} (this reader speaks {VERSION})")
    kind, t = body.pop("event", None), body.pop("t", None)
    body.pop("v")
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise ProtocolError("event lacks a numeric 't'")
    _check(str(kind), body)
    return Event(str(kind), float(t), body)


REQUEST_OPS = ("generate", "score", "examples")
"""What a generate session is asked, one JSON object per stdin line: ``{"op": "generate", "id": "1",
"messages": [{"role", "content"}, ...] or "prompt": str, "adapter": name or null (the base),
"temperature", "top_p", "max_new_tokens", "min_new_tokens", "measure": bool}``;
``{"op": "score", "id", "adapter", "limit"}``: loss and greedy token accuracy on held-out examples;
``{"op": "examples", "id", "limit"}``: those examples. The plain words ``stop`` (the generation
in progress ends where it is) and ``quit`` (or the end of stdin) are commands too."""


def parse_request(line: str) -> dict[str, Any] | str | None:
    """A generate session's stdin line: a request dict, ``"stop"``/``"quit"``, or None (blank).
    Raises :class:`ProtocolError` for a line that is neither, saying why."""
    text = line.strip()
    if not text:
        return None
    if text.lower() in ("stop", "quit"):
        return text.lower()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not a request (JSON object) or a command word: {exc}") from None
    if not isinstance(body, dict) or body.get("op") not in REQUEST_OPS:
        raise ProtocolError(f"a request needs \"op\": one of {', '.join(REQUEST_OPS)}")
    body["id"] = str(body.get("id", ""))
    return body


def parse_command(line: str) -> str | None:
    """A stdin line as a command, or None when it is not one (blank lines, typos)."""
    word = line.strip().lower()
    return word if word in COMMANDS else None


EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_OOM = 0, 1, 2, 3
"""The trainer's exit codes: the run ended as asked; a bug; bad config, data, model or a filesystem
fault the user must fix; out of memory."""


def exit_code(error: str | None) -> int:
    """The exit code for a run that reported an ``error`` event of this type (None: no error)."""
    return {None: EXIT_OK, "oom": EXIT_OOM, "config": EXIT_INPUT, "data": EXIT_INPUT,
            "model": EXIT_INPUT, "io": EXIT_INPUT}.get(error, EXIT_INTERNAL)
