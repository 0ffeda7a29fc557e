"""``python -m trainer generate``: try what a run trained: chat with it, answer one prompt with the
base and the tuned model, or with two adapters of one base.

One process loads the base once (in 4 bits when the run trained QLoRA, as the adapter was
trained against) and every adapter onto it: the base answers with the adapters disabled (peft's
``disable_adapter``), an adapter with it active (``set_adapter``), so the base's memory is paid
once. Requests come as JSON lines on stdin and answers as events on stdout
(trainer/protocol.py ``REQUEST_OPS``): tokens as they are decoded, then ``done`` with the time to
the first token and tokens/s. ``stop`` ends the generation in progress at its next token; it is
read on its own thread, so it works mid-generation.

Prompts are laid out as the run trained (trainer/data.py ``prompt_text``: the chat template, or
the fallback layout), with the model's ``generation_config.json`` defaults for what a request
leaves out. ``score`` measures loss and greedy token accuracy on the run's held-out examples,
the reply tokens only when the run trained on replies only.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from planner.catalog import adapter_base
from planner.errors import PlannerError
from trainer.chat import BASE, MODEL, NO_DATASET, TUNED, Loaded, Session
from trainer.config import ConfigError, TrainConfig
from trainer.export import ExportError, trained_weights
from trainer.loading import (
    ModelError,
    load_tokenizer,
    model_class,
    model_layout,
    quantization_config,
    reading,
    source,
    weight_dtype,
)
from trainer.protocol import ProtocolError, encode, parse_request
from trainer.rundir import is_run_dir


def _adapter_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    return (name.strip(), Path(path).expanduser()) if sep else (Path(text).name, Path(text).expanduser())


def plan(run: str | None, adapters: list[str], model: str | None) -> tuple[TrainConfig, dict[str, Path], str]:
    """The base to load (as a run config), the adapters to put on it by name, and the name of the
    model when it has no adapter."""
    named = dict(_adapter_arg(a) for a in adapters)
    if BASE in named or (run and TUNED in named):
        raise ConfigError(f"--adapter names '{BASE}' and '{TUNED}' are taken; name it NAME=DIR", "adapter")
    if run:
        run_dir = Path(run).expanduser()
        if not is_run_dir(run_dir) or not (run_dir / "config.json").is_file():
            raise ConfigError(f"{run_dir} is not a run directory of this trainer (no config.json)", "run")
        cfg = TrainConfig.load(run_dir / "config.json")
        weights = trained_weights(run_dir, cfg)
        if cfg.method == "full":
            if named:
                raise ConfigError("a full fine-tune has no base to put adapters on; open the adapters with --model",
                                  "adapter")
            return TrainConfig(model=str(weights), dataset=cfg.dataset, method="full"), {}, TUNED
        return cfg, {TUNED: weights, **named}, TUNED
    if not named and not model:
        raise ConfigError("give --run RUN_DIR, --model DIR, or --adapter DIR (its base from adapter_config.json)",
                          "run")
    base = model or adapter_base(next(iter(named.values())))
    if not base:
        raise ModelError(f"{next(iter(named.values()))} names no base model; give it with --model")
    return TrainConfig(model=base, dataset=NO_DATASET, method="lora" if named else "full"), named, MODEL


def load(cfg: TrainConfig, adapters: dict[str, Path], device: str, solo: str = TUNED) -> Loaded:
    import torch
    from peft import PeftModel

    start = time.monotonic()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device == "cuda" else "fp32"
    kwargs: dict[str, Any] = dict(dtype=weight_dtype(precision), use_safetensors=True,
                                  trust_remote_code=cfg.trust_remote_code)
    if cfg.method == "qlora":  # the 4-bit base the adapter was trained against
        kwargs.update(quantization_config=quantization_config(cfg, precision),
                      device_map={"": 0} if device == "cuda" else {"": "cpu"})
    for path in adapters.values():
        adapter_base(path)  # each a peft adapter folder, or one line saying it is not
    tokenizer = load_tokenizer(cfg)
    name, local = source(cfg)
    with reading(name, local, f"{name}: cannot load the model with its adapters: {{why}}"):
        model = model_class(cfg).from_pretrained(name, **kwargs)
        if cfg.method != "qlora":
            model = model.to(device)
        for n, (adapter, path) in enumerate(adapters.items()):
            if n == 0:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=adapter)
            else:
                model.load_adapter(str(path), adapter_name=adapter)
    model.eval()
    names = (BASE, *adapters) if adapters else (solo,)
    return Loaded(model, tokenizer, cfg, names, device, time.monotonic() - start)


def _reader(stdin: TextIO, requests: queue.Queue, stop: threading.Event) -> None:
    for line in stdin:
        try:
            request = parse_request(line)
        except ProtocolError as exc:
            requests.put(exc)
            continue
        if request == "stop":
            stop.set()
        elif request is not None:
            requests.put(request)
        if request == "quit":
            return
    requests.put("quit")


def main(run: str | None, adapters: list[str], model: str | None, device: str = "auto",
         stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    start = time.monotonic()

    def emit(kind: str, **fields: Any) -> None:
        print(encode(kind, time.monotonic() - start, **fields), file=out, flush=True)

    from planner.simulate import quiet

    try:
        cfg, named, solo = plan(run, adapters, model)
        with quiet(), model_layout(cfg):
            loaded = load(cfg, named, device, solo)
            stop = threading.Event()
            session = Session(loaded, emit, stop)
            session.ready()
            requests: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(stdin, requests, stop), daemon=True).start()
            while (request := requests.get()) != "quit":
                if isinstance(request, ProtocolError):
                    emit("error", id="", type="config", message=str(request), hint="one JSON request per line")
                    continue
                stop.clear()
                session.handle(request)
    except (ConfigError, ModelError, ExportError, PlannerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
