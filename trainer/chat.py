"""A generate session's model and what it does for each request (trainer/generate.py loads the
model and runs the session): stream an answer, score held-out examples, list them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainer.config import ConfigError, TrainConfig
from trainer.data import IGNORE, held_out, prompt_text

EXAMPLES_LIMIT = 32
BASE = "base"
"""The name a request gives to answer with every adapter disabled."""
TUNED = "tuned"
"""A run's own adapter (or, for a full fine-tune, its model)."""
MODEL = "model"
"""A model opened on its own (``--model`` without adapters: a merged export, say)."""
NO_DATASET = "-"
"""A session opened on adapters alone has no data."""


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    cfg: TrainConfig
    names: tuple[str, ...]
    """What a request may ask to answer: ``base`` (LoRA/QLoRA) and each adapter's name."""
    device: str
    load_s: float


def stored_bytes(model: Any) -> int:
    """Bytes of the weights (bitsandbytes' quantization state included), each storage once."""
    from planner.simulate.meta import persistent_tensors

    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                for t in persistent_tensors(model)["parameters"]}
    return sum(storages.values())


class Session:
    """Answers requests one at a time; ``stop`` (set by the stdin thread) ends a generation."""

    def __init__(self, loaded: Loaded, emit: Callable[..., None], stop: threading.Event) -> None:
        self.loaded, self.emit, self.stop = loaded, emit, stop

    def ready(self) -> None:
        gc = self.loaded.model.generation_config
        self.emit("ready", model=self.loaded.cfg.model, adapters=",".join(self.loaded.names),
                  device=self.loaded.device, load_s=round(self.loaded.load_s, 3),
                  weights_bytes=stored_bytes(self.loaded.model), temperature=gc.temperature, top_p=gc.top_p,
                  max_new_tokens=gc.max_new_tokens, chat=_chat_kind(self.loaded.tokenizer))

    def handle(self, request: dict[str, Any]) -> None:
        from trainer.chat import examples, generate, score
        from trainer.faults import is_oom

        handler = {"generate": generate, "score": score, "examples": examples}[request["op"]]
        try:
            handler(self, request)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.emit("error", id=request["id"], type="config", message=message,
                      hint="check the request's fields (trainer/protocol.py REQUEST_OPS)")
        except Exception as exc:
            if not is_oom(exc):
                raise
            _free_cuda()
            self.emit("error", id=request["id"], type="oom", message="out of memory while generating",
                      hint="ask for fewer new tokens or a shorter prompt, or close other programs on the GPU")

    def variant(self, name: Any) -> Any:
        """A context in which the model answers as ``name``: the base, or one adapter."""
        import contextlib

        names = self.loaded.names
        name = self.named(name)
        if name not in names:
            raise ConfigError(f"adapter '{name}' is not loaded; one of: {', '.join(names)}", "adapter")
        if name == BASE:
            return self.loaded.model.disable_adapter()
        if len(names) > 1:
            self.loaded.model.set_adapter(name)
        return contextlib.nullcontext()

    def named(self, name: Any) -> Any:
        """What a request's ``adapter`` names: itself, or :attr:`default` when it names nothing."""
        return name if name is not None else self.default

    @property
    def default(self) -> str:
        """What a request that names nothing gets: the first adapter (the run's own), else the model."""
        names = self.loaded.names
        return names[1] if len(names) > 1 else names[0]


def _chat_kind(tokenizer: Any) -> str:
    from trainer.data import _chat_template

    return "template" if _chat_template(tokenizer) is not None else "fallback"


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()




def _messages(request: dict[str, Any]) -> list[dict[str, str]] | None:
    messages = request.get("messages")
    if messages is None:
        return None
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
        raise ConfigError("messages: expected a list of {\"role\", \"content\"} objects", "messages")
    if messages[-1].get("role") != "user":
        raise ConfigError("messages: the last message must be the user's", "messages")
    return [{"role": str(m.get("role")), "content": m["content"]} for m in messages]


def _number(request: dict[str, Any], key: str, default: Any, low: float, high: float) -> Any:
    value = request.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{key}: expected a number from {low:g} to {high:g}, got {value!r}", key)
    return value


def generate(session: Session, request: dict[str, Any]) -> None:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    from trainer.virtual_tokens import generate as virtual_generate
    from trainer.virtual_tokens import virtual_kind

    loaded, rid = session.loaded, request["id"]
    tok, model = loaded.tokenizer, loaded.model
    messages = _messages(request)
    prompt = prompt_text(tok, messages) if messages is not None else request.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ConfigError("a generate request needs \"messages\" or a non-empty \"prompt\"", "prompt")
    gc = model.generation_config
    temperature = _number(request, "temperature", gc.temperature if gc.do_sample else 0.0, 0.0, 10.0) or 0.0
    top_p = _number(request, "top_p", gc.top_p, 0.0, 1.0)
    new = int(_number(request, "max_new_tokens", gc.max_new_tokens or 256, 1, 1_000_000))
    # at least this many before EOS may end the answer (a benchmark's fixed length)
    least = int(_number(request, "min_new_tokens", 0, 0, new))
    # the template writes its own special tokens; a plain prompt gets the tokenizer's (BOS)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=messages is None).input_ids.to(model.device)
    clock = {"start": time.monotonic(), "first": None, "tokens": 0}

    class Stream(TextStreamer):
        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                clock["tokens"] += int(value.numel())
                clock["first"] = clock["first"] or time.monotonic()
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                session.emit("token", id=rid, text=text)

    class Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), session.stop.is_set(), dtype=torch.bool, device=input_ids.device)

    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    measure = _Measure(model, loaded.device, bool(request.get("measure")))
    options = dict(max_new_tokens=new, min_new_tokens=least, streamer=Stream(tok, skip_prompt=True,
                   skip_special_tokens=True), stopping_criteria=StoppingCriteriaList([Stop()]), **sampling)
    with session.variant(request.get("adapter")), torch.inference_mode(), measure:
        if session.named(request.get("adapter")) != BASE and virtual_kind(model):
            # peft's own generate gets prompt and prefix tuning wrong (trainer/virtual_tokens.py)
            virtual_generate(model, ids, pad_token_id=tok.pad_token_id, **options)
        else:
            model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tok.pad_token_id, **options)
    end = time.monotonic()
    first, tokens = clock["first"], clock["tokens"]
    decode_s = end - first if first else 0.0
    session.emit("done", id=rid, status="stopped" if session.stop.is_set() else "completed", new_tokens=tokens,
                 ttft_s=round(first - clock["start"], 4) if first else None,
                 tokens_per_s=round((tokens - 1) / decode_s, 2) if tokens > 1 and decode_s > 0 else None,
                 prompt_tokens=int(ids.shape[1]), peak_alloc_bytes=measure.peak)


class _Measure:
    """Peak tensor bytes of one request: CUDA's own counter, or on the CPU (when asked: it slows
    every op) the live-bytes counter the trainer measures CPU runs with, seeded with the weights."""

    def __init__(self, model: Any, device: str, asked: bool) -> None:
        self.model, self.device, self.asked = model, device, asked
        self.peak: int | None = None
        self._counter: Any = None

    def __enter__(self) -> _Measure:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif self.asked:
            from planner.simulate.meta import live_bytes_class, persistent_tensors

            self._counter = live_bytes_class()(gpu_kernels=False)
            for t in persistent_tensors(self.model)["parameters"]:
                self._counter.track(t)
            self._counter.reset_peak()
            self._counter.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated())
        elif self._counter is not None:
            self._counter.__exit__(*exc)
            self.peak = int(self._counter.peak)


def _held_out(session: Session) -> tuple[str, list[Any]]:
    cfg = session.loaded.cfg
    if cfg.dataset == NO_DATASET:
        raise ConfigError("no run is open: examples and scores come from a run's data (--run RUN_DIR)", "run")
    return held_out(cfg, session.loaded.tokenizer)


def _limit(request: dict[str, Any]) -> int:
    return int(_number(request, "limit", EXAMPLES_LIMIT, 1, 100_000))


def examples(session: Session, request: dict[str, Any]) -> None:
    split, rows = _held_out(session)
    for index, (example, _, _) in enumerate(rows[:_limit(request)]):
        messages = list(example.messages or ())
        reference = ""
        if messages and messages[-1]["role"] == "assistant":
            reference = messages.pop()["content"]
        prompt = messages if messages else [{"role": "user", "content": example.text or ""}]
        session.emit("example", id=request["id"], index=index, split=split,
                     messages_json=json.dumps(prompt, ensure_ascii=False), reference=reference)


def score(session: Session, request: dict[str, Any]) -> None:
    """Teacher-forced: the loss over the tokens the run learned from, and how often the most
    likely next token is the reference's (greedy token accuracy)."""
    import torch

    split, rows = _held_out(session)
    rows = rows[:_limit(request)]
    model, loss_sum, right, count = session.loaded.model, 0.0, 0, 0
    with session.variant(request.get("adapter")), torch.inference_mode():
        for _, ids, labels in rows:
            inputs = torch.tensor([ids], device=model.device)
            # the prompt's own positions: prompt tuning's logits also cover its virtual tokens, in front
            logits = model(input_ids=inputs).logits[0, -len(ids):-1].float()
            target = torch.tensor(labels[1:], device=logits.device)
            mask = target != IGNORE
            if not bool(mask.any()):
                continue
            loss_sum += float(torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum"))
            right += int((logits[mask].argmax(-1) == target[mask]).sum())
            count += int(mask.sum())
    name = request.get("adapter") or session.default
    session.emit("score", id=request["id"], adapter=str(name), examples=len(rows), split=split,
                 loss=loss_sum / count if count else None, token_accuracy=right / count if count else None,
                 tokens=count)
