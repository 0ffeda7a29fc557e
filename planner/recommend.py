"""Which method, optimizer and micro-batch to use on a GPU, and what to change when nothing fits.

The advice users already know, made precise with the estimator:
LoRA in 16-bit when it fits with headroom to spare (planner.headroom, 10%: fast, accurate);
otherwise QLoRA, 8-bit then 4-bit; full fine-tuning only when it fits and the user asked for
maximum quality. Within a method the fastest fitting option wins. Memory is the GPU's
driver-reported total (``GpuTarget.memory_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product
from typing import Any

from planner.alternatives import Alternative, what_would_fit
from planner.catalog import ModelSpec
from planner.cost import run_cost
from planner.headroom import HEADROOM, fits, fits_comfortably
from planner.launch import why_not_trainable
from planner.memory import estimate
from planner.options import TrainSetup
from planner.targets import GpuTarget
from planner.units import GiB, fmt_gib

METHODS = (("full", None), ("lora", None), ("qlora", "int8"), ("qlora", "nf4"))
OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit")
BATCHES = (1, 2, 4, 8, 16)
_MAX_BATCH, _MAX_SEQ = 4096, 1 << 20


@dataclass(frozen=True)
class Option:
    setup: TrainSetup
    peak_allocated_bytes: int
    device_used_bytes: int
    fits: bool
    headroom_bytes: int
    max_batch_size: int
    max_seq_len: int
    tokens_per_second: float
    hours: float | None
    energy_kwh: float | None
    cost_usd: float | None
    warnings: tuple[str, ...] = ()
    """Its estimate's warnings (a sequence beyond the context...), said before anything else."""

    def to_json(self) -> dict:
        s = self.setup
        return {
            "method": s.method, "quant": s.quant, "optimizer": s.optimizer, "batch_size": s.batch_size,
            "seq_len": s.seq_len, "grad_checkpointing": s.grad_checkpointing,
            "peak_allocated_bytes": self.peak_allocated_bytes, "device_used_bytes": self.device_used_bytes,
            "fits": self.fits, "headroom_bytes": self.headroom_bytes, "max_batch_size": self.max_batch_size,
            "max_seq_len": self.max_seq_len, "tokens_per_second": round(self.tokens_per_second, 1),
            "hours": self.hours, "energy_kwh": self.energy_kwh, "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class Recommendation:
    gpu: GpuTarget
    options: tuple[Option, ...]
    recommended: int | None
    explanation: str
    alternatives: tuple[Alternative, ...]

    @property
    def best(self) -> Option | None:
        return None if self.recommended is None else self.options[self.recommended]

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the recommended plan's own estimate warns about, and a plan the app's trainer
        cannot run: shown first, wherever the recommendation is."""
        if self.best is None:
            return ()
        problem = why_not_trainable(self.best.setup)
        return self.best.warnings + ((f"the app's trainer cannot run this plan: {problem}",) if problem else ())

    def to_json(self) -> dict:
        g = self.gpu
        return {
            "gpu": {"name": g.name, "memory_bytes": g.memory_bytes, "count": g.count, "source": g.source},
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended,
            # DESIGN.md's schema has no warnings key: they lead the explanation, as on screen
            "explanation": " ".join([*(f"Warning: {w}." for w in self.warnings), self.explanation]),
            "alternatives": [a.line for a in self.alternatives],
        }


def _fits(model: ModelSpec, setup: TrainSetup, budget: int) -> bool:
    return fits(estimate(model, setup).device_used_bytes, budget)


def _largest(model: ModelSpec, setup: TrainSetup, field: str, budget: int, limit: int) -> int:
    """Largest value of ``field`` that fits (0 if even 1 does not): memory grows with it."""
    def at(value: int) -> TrainSetup:
        changed: dict[str, Any] = {field: value}
        return replace(setup, **changed)

    if not _fits(model, at(1), budget):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(model, at(mid), budget):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _option(model: ModelSpec, setup: TrainSetup, gpu: GpuTarget, max_batch: int, dataset_tokens: int | None,
            epochs: float, usd_per_hour: float | None, usd_per_kwh: float | None) -> Option:
    est = estimate(model, setup)
    seq_limit = min(model.arch.max_position_embeddings or _MAX_SEQ, _MAX_SEQ)
    cost = run_cost(model.arch, setup, gpu.spec, dataset_tokens, epochs, usd_per_hour, usd_per_kwh)
    return Option(
        setup=setup, peak_allocated_bytes=est.peak_allocated_bytes, device_used_bytes=est.device_used_bytes,
        fits=fits(est.device_used_bytes, gpu.memory_bytes), headroom_bytes=gpu.memory_bytes - est.device_used_bytes,
        max_batch_size=max_batch, max_seq_len=_largest(model, setup, "seq_len", gpu.memory_bytes, seq_limit),
        tokens_per_second=cost.tokens_per_second, hours=cost.hours, energy_kwh=cost.energy_kwh,
        cost_usd=cost.cost_usd, warnings=est.warnings)


def search(model: ModelSpec, base: TrainSetup, gpu: GpuTarget, dataset_tokens: int | None = None,
           epochs: float = 1.0, usd_per_hour: float | None = None, usd_per_kwh: float | None = None,
           methods: tuple = METHODS) -> tuple[Option, ...]:
    """Every method x checkpointing x optimizer x micro-batch option, per GPU of ``gpu``."""
    sharding = base.sharding if gpu.count > 1 else "none"
    options = []
    batches = sorted(set(BATCHES) | {base.batch_size})
    for (method, quant), ckpt, opt in product(methods, (True, False), OPTIMIZERS):
        combo = replace(base, method=method, quant=quant, grad_checkpointing=ckpt, optimizer=opt,
                        num_gpus=gpu.count, sharding=sharding,
                        modules_to_save=base.modules_to_save if method != "full" else ())
        max_batch = _largest(model, combo, "batch_size", gpu.memory_bytes, _MAX_BATCH)
        for batch in batches:
            options.append(_option(model, replace(combo, batch_size=batch), gpu, max_batch, dataset_tokens,
                                   epochs, usd_per_hour, usd_per_kwh))
    return tuple(options)


def _label(s: TrainSetup) -> str:
    method = {"full": "full fine-tuning", "lora": "LoRA (16-bit base)"}.get(
        s.method, f"QLoRA ({'8-bit' if s.quant == 'int8' else '4-bit NF4'} base)")
    return (f"{method}, {s.optimizer}, micro-batch {s.batch_size} x {s.seq_len} tokens, "
            f"checkpointing {'on' if s.grad_checkpointing else 'off'}")


def _pick(options: tuple[Option, ...], method: str, quant: str | None, memory: int,
          headroom: float) -> int | None:
    """Fastest option of this method that fits, with HEADROOM to spare when ``headroom`` is set."""
    best = None
    for i, o in enumerate(options):
        room = fits_comfortably(o.device_used_bytes, memory) if headroom else o.fits
        if o.setup.method == method and o.setup.quant == quant and room:
            if best is None or o.tokens_per_second > options[best].tokens_per_second:
                best = i
    return best


def preference(max_quality: bool) -> list[tuple[str, str | None, float]]:
    """(method, quant, headroom) in the order they are tried: a comfortable fit (HEADROOM free) of
    any method beats a tight fit of a better one, and LoRA > QLoRA 8-bit > QLoRA 4-bit within
    each. More memory can therefore only move the choice up this list."""
    adapters = [("lora", None), ("qlora", "int8"), ("qlora", "nf4")]
    order = [("full", None, 0.0)] if max_quality else []
    return order + [(m, q, HEADROOM) for m, q in adapters] + [(m, q, 0.0) for m, q in adapters]


def recommend(model: ModelSpec, base: TrainSetup, gpu: GpuTarget, dataset_tokens: int | None = None,
              epochs: float = 1.0, max_quality: bool = False, usd_per_hour: float | None = None,
              usd_per_kwh: float | None = None, alternatives: bool = True,
              methods: tuple = METHODS) -> Recommendation:
    """The recommendation among ``methods`` (all four unless the user fixed one). When the
    standard loss leaves only a worse choice (or none), the chunked loss (planner/loss.py: the
    same loss, computed chunk by chunk) is tried and recommended if it does better."""
    args = (model, gpu, dataset_tokens, epochs, max_quality, usd_per_hour, usd_per_kwh, methods)
    rec, rank = _recommend(base, *args)
    if base.loss == "standard" and rank > 0:  # the first choice needs no help
        chunked, chunked_rank = _recommend(replace(base, loss="chunked"), *args)
        if chunked_rank < rank:
            without = ("nothing fits" if rec.best is None else
                       f"{_label(rec.best.setup)} at {rec.best.device_used_bytes / GiB:.1f} GiB")
            note = (f" It uses the chunked loss (the same loss computed chunk by chunk, so the (tokens x vocab) "
                    f"logits never exist whole; the time model assumes the same speed): with the standard loss, "
                    f"{without}.")
            rec = replace(chunked, explanation=chunked.explanation + note)
    if rec.best is None and alternatives:
        rec = replace(rec, alternatives=what_would_fit(model, base, gpu))
    return rec


def _recommend(base: TrainSetup, model: ModelSpec, gpu: GpuTarget, dataset_tokens: int | None, epochs: float,
               max_quality: bool, usd_per_hour: float | None, usd_per_kwh: float | None,
               methods: tuple) -> tuple[Recommendation, int]:
    """The recommendation for ``base`` as it is, and the rank of its choice in :func:`preference`
    (lower is better; the list's length when nothing fits)."""
    options = search(model, base, gpu, dataset_tokens, epochs, usd_per_hour, usd_per_kwh, methods)
    memory = gpu.memory_bytes
    order = preference(max_quality or methods == (("full", None),))
    chosen, rank = None, len(order)
    for i, (method, quant, room) in enumerate(order):
        if (method, quant) in methods:
            chosen = _pick(options, method, quant, memory, room)
            if chosen is not None:
                rank = i
                break
    explanation = _explain(model, gpu, options, chosen, max_quality)
    return Recommendation(gpu, options, chosen, explanation, ()), rank


def _smallest(options: tuple[Option, ...], method: str, quant: str | None) -> Option | None:
    return min((o for o in options if o.setup.method == method and o.setup.quant == quant),
               key=lambda o: o.device_used_bytes, default=None)


def _explain(model: ModelSpec, gpu: GpuTarget, options: tuple[Option, ...], chosen: int | None,
             max_quality: bool) -> str:
    mem = gpu.memory_bytes / GiB
    where = f"{gpu.count} x {gpu.name}" if gpu.count > 1 else gpu.name
    lora = _smallest(options, "lora", None)
    full = _smallest(options, "full", None)
    if chosen is None:
        leanest = min(options, key=lambda o: o.device_used_bytes)
        # no parentheses after the name: GUI names carry their own ("RTX 4090 (catalog)")
        return (f"Nothing fits on {where} with {fmt_gib(mem)} per GPU: even the leanest option, "
                f"{_label(leanest.setup)}, needs {leanest.device_used_bytes / GiB:.1f} GiB per GPU.")
    o = options[chosen]
    s = o.setup
    text = (f"{_label(s)}. On {where} it needs {o.device_used_bytes / GiB:.1f} GiB of {fmt_gib(mem)} per GPU "
            f"({o.headroom_bytes / GiB:.1f} GiB, {o.headroom_bytes / gpu.memory_bytes:.0%} free), "
            f"~{o.tokens_per_second:,.0f} tokens/s")
    if o.hours is not None:
        text += f", {o.hours:.1f} h"
        if o.cost_usd is not None:
            text += f", ${o.cost_usd:,.2f}"
    text += "."
    if not fits_comfortably(o.device_used_bytes, gpu.memory_bytes):
        text += f" Less than {HEADROOM:.0%} headroom: a longer sample or a memory spike can run out of memory."
    if s.method == "full":
        text += " Full fine-tuning fits and maximum quality was asked for."
    elif s.method == "lora" and full is not None:
        text += f" Full fine-tuning would need {full.device_used_bytes / GiB:.1f} GiB at the least."
        if not max_quality and full.fits:
            text += " It fits too: ask for maximum quality to get it."
    elif s.method == "qlora" and lora is not None:
        room = "does not fit" if not lora.fits else f"fits without {HEADROOM:.0%} headroom"
        text += (f" LoRA on a 16-bit base needs {lora.device_used_bytes / GiB:.1f} GiB at the least ({room} "
                 f"on {fmt_gib(mem)}), so the base is quantized.")
    return text
