"""Which method, optimizer and micro-batch to use on a GPU, and what to change when nothing fits.

The advice users already know, made precise with the estimator:
LoRA in 16-bit when it fits with headroom to spare (planner.headroom, 10%: fast, accurate);
otherwise QLoRA, 8-bit then 4-bit; full fine-tuning only when it fits and the user asked for
maximum quality. Within a method the fastest fitting option wins. Memory is the GPU's
driver-reported total (``GpuTarget.memory_bytes``).

When the first choice does not fit comfortably, the memory savers (:data:`SAVERS`) are added one
by one, cheapest first, and kept when they move the choice up; activation offloading also needs
host RAM, checked against the machine's when it is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

from planner.alternatives import Alternative, what_would_fit
from planner.batch_shape import as_run
from planner.calibration import HOST_LINK_BYTES_PER_S
from planner.catalog import ModelSpec
from planner.cost import fmt_shares, run_cost
from planner.errors import PlannerError
from planner.headroom import HEADROOM, fits, fits_comfortably, fits_host
from planner.launch import why_not_trainable
from planner.memory import estimate, memory_savers
from planner.options import PREFIX_CHECKPOINTING, TrainSetup, at_micro_batch
from planner.padding import padding_note
from planner.stacks import planned
from planner.targets import GpuTarget
from planner.units import GiB, fmt_count, fmt_gib

METHODS = (("full", None), ("lora", None), ("qlora", "int8"), ("qlora", "nf4"))
OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit")
BATCHES = (1, 2, 4, 8, 16)
_MAX_BATCH, _MAX_SEQ = 4096, 1 << 20
SAVERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the chunked loss", {"loss": "chunked"}),
    ("QLoRA's frozen weights in 16 bits (no fp32 upcast)", {"kbit_prepare": False}),
    ("offloaded activations", {"offload_activations": True}),
)
"""Memory savers in the order the recommender adds them: free first (the same loss computed chunk
by chunk; the QLoRA paper's own dtype for embeddings, norms and LM head), then the one that
costs time (host copies of the checkpointed activations)."""


@dataclass(frozen=True)
class Option:
    setup: TrainSetup
    peak_allocated_bytes: int
    device_used_bytes: int
    host_bytes: int
    """Host RAM it needs (offloaded activations or state)."""
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
    time_shares: Mapping[str, float] = field(default_factory=dict)
    """Where an optimizer step's time goes (planner.cost.StepTime.shares)."""

    def to_json(self) -> dict:
        s = self.setup
        computed, data_share = as_run(s)
        return {
            "method": s.method, "quant": s.quant, "optimizer": s.optimizer, "batch_size": s.batch_size,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "seq_len": s.seq_len, "grad_checkpointing": s.grad_checkpointing,
            "peak_allocated_bytes": self.peak_allocated_bytes, "device_used_bytes": self.device_used_bytes,
            "host_bytes": self.host_bytes, **memory_savers(s), "fits": self.fits,
            "headroom_bytes": self.headroom_bytes, "max_batch_size": self.max_batch_size,
            "max_seq_len": self.max_seq_len, "tokens_per_second": round(self.tokens_per_second, 1),
            "hours": self.hours, "energy_kwh": self.energy_kwh, "cost_usd": self.cost_usd,
            "step_time_shares": {name: round(share, 4) for name, share in self.time_shares.items()},
            "packing": s.packing, "computed_seq_len": computed.seq_len, "data_share": round(data_share, 4),
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


def _fits(model: ModelSpec, setup: TrainSetup, budget: int, host_memory: int | None = None) -> bool:
    est = estimate(model, setup)
    return fits(est.device_used_bytes, budget) and fits_host(est.host_bytes, host_memory)


def _largest(model: ModelSpec, setup: TrainSetup, field: str, budget: int, limit: int,
             host_memory: int | None = None) -> int:
    """Largest value of ``field`` that fits (0 if even 1 does not): memory grows with it."""
    def at(value: int) -> TrainSetup:
        changed: dict[str, Any] = {field: value}
        return replace(setup, **changed)

    if not _fits(model, at(1), budget, host_memory):
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(model, at(mid), budget, host_memory):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _option(model: ModelSpec, setup: TrainSetup, gpu: GpuTarget, max_batch: int, dataset_tokens: int | None,
            epochs: float, usd_per_hour: float | None, usd_per_kwh: float | None, host_memory: int | None) -> Option:
    est = estimate(model, setup)
    seq_limit = min(model.arch.max_position_embeddings or _MAX_SEQ, _MAX_SEQ)
    cost = run_cost(model.arch, setup, gpu.spec, dataset_tokens, epochs, usd_per_hour, usd_per_kwh)
    return Option(
        setup=setup, peak_allocated_bytes=est.peak_allocated_bytes, device_used_bytes=est.device_used_bytes,
        host_bytes=est.host_bytes,
        fits=fits(est.device_used_bytes, gpu.memory_bytes) and fits_host(est.host_bytes, host_memory),
        headroom_bytes=gpu.memory_bytes - est.device_used_bytes, max_batch_size=max_batch,
        # the longest examples that fit, whatever the data's own (with them, any cut above its longest would)
        max_seq_len=_largest(model, replace(setup, lengths=None), "seq_len", gpu.memory_bytes, seq_limit, host_memory),
        tokens_per_second=cost.tokens_per_second, hours=cost.hours, energy_kwh=cost.energy_kwh,
        cost_usd=cost.cost_usd, warnings=est.warnings, time_shares=cost.step.shares())


def search(model: ModelSpec, base: TrainSetup, gpu: GpuTarget, dataset_tokens: int | None = None,
           epochs: float = 1.0, usd_per_hour: float | None = None, usd_per_kwh: float | None = None,
           methods: tuple = METHODS, host_memory: int | None = None) -> tuple[Option, ...]:
    """Every method x checkpointing x optimizer x micro-batch option, per GPU of ``gpu``
    (activation offloading, when ``base`` has it, on the options with checkpointing)."""
    sharding = base.sharding if gpu.count > 1 else "none"
    options = []
    batches = sorted(set(BATCHES) | {base.batch_size})
    for (method, quant), ckpt, opt in product(methods, (True, False), OPTIMIZERS):
        if ckpt and base.peft == "prefix" and method != "full":
            continue  # prefix tuning trains without checkpointing
        combo = planned(base, method=method, quant=quant, grad_checkpointing=ckpt, optimizer=opt,
                        num_gpus=gpu.count, sharding=sharding, offload_activations=base.offload_activations and ckpt,
                        modules_to_save=base.modules_to_save if method != "full" else ())
        max_batch = _largest(model, combo, "batch_size", gpu.memory_bytes, _MAX_BATCH, host_memory)
        for batch in batches:
            options.append(_option(model, at_micro_batch(combo, batch), gpu, max_batch, dataset_tokens,
                                   epochs, usd_per_hour, usd_per_kwh, host_memory))
    return tuple(options)


def _label(s: TrainSetup) -> str:
    plain = s.adapter_name == "LoRA"  # plain LoRA on a quantized base is QLoRA
    adapter = s.adapter_name if plain else s.adapter_label
    method = {"full": "full fine-tuning", "lora": f"{adapter} (16-bit base)"}.get(
        s.method, f"{'QLoRA' if plain else adapter} ({'8-bit' if s.quant == 'int8' else '4-bit NF4'} base)")
    steps = s.gradient_accumulation_steps
    accumulated = f" (accumulation {steps})" if steps > 1 else ""
    return (f"{method}, {s.optimizer}, micro-batch {s.batch_size} x {s.seq_len} tokens{accumulated}, "
            f"checkpointing {s.checkpointing}")


SPEED_TIE = 0.01
"""Options this close to the fastest count as fast as it: the first of them (checkpointing on, the
plain optimizer, the smallest micro-batch) is kept rather than spending memory on a difference
far below the time model's resolution (a larger micro-batch amortizes the optimizer update)."""


def _pick(options: tuple[Option, ...], method: str, quant: str | None, memory: int,
          headroom: float) -> int | None:
    """Fastest option of this method that fits, with HEADROOM to spare when ``headroom`` is set."""
    eligible = [i for i, o in enumerate(options) if o.setup.method == method and o.setup.quant == quant
                and o.fits and (fits_comfortably(o.device_used_bytes, memory) or not headroom)]
    if not eligible:
        return None
    fastest = max(options[i].tokens_per_second for i in eligible)
    return next(i for i in eligible if options[i].tokens_per_second >= (1 - SPEED_TIE) * fastest)


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
              methods: tuple = METHODS, host_memory: int | None = None) -> Recommendation:
    """The recommendation among ``methods`` (all four unless the user fixed one). When it is not
    the first choice, :data:`SAVERS` are added one at a time and kept when they move the choice up.
    ``host_memory``: the machine's RAM in bytes (None: unknown, so offloading's need is said, not checked)."""
    args = (model, gpu, dataset_tokens, epochs, max_quality, usd_per_hour, usd_per_kwh, methods, host_memory)
    plain, rank = _recommend(base, *args)
    rec, setup, added, kept = plain, base, [], []
    before = plain  # the best recommendation with one saver fewer than ``rec``
    trial = plain
    for words, change in SAVERS:
        if rank == 0:  # the first choice needs no help
            break
        if all(getattr(setup, k) == v for k, v in change.items()):
            continue  # the user already asked for it
        try:
            setup = replace(setup, **change)
        except PlannerError:
            continue  # cannot combine with the plan (activation offloading under prefix tuning)
        added.append(words)
        previous, (trial, trial_rank) = trial, _recommend(setup, *args)
        if trial_rank < rank:
            before, rec, rank, kept = previous, trial, trial_rank, list(added)
    if kept:
        rec = replace(rec, explanation=rec.explanation + _savers_note(model, kept, plain, before, rec, gpu))
    elif added and host_memory is not None:
        rec = replace(rec, explanation=rec.explanation + _short_of_host(trial, gpu, host_memory))
    if rec.best is None and alternatives:
        rec = replace(rec, alternatives=what_would_fit(model, base, gpu))
    return rec


def _savers_note(model: ModelSpec, kept: list[str], plain: Recommendation, before: Recommendation,
                 rec: Recommendation, gpu: GpuTarget) -> str:
    """What the savers cost, and what the plan would be without them (and with one fewer)."""
    best = rec.best
    assert best is not None

    def plan(r: Recommendation) -> str:
        o = r.best
        return "nothing fits" if o is None else f"{_label(o.setup)} at {o.device_used_bytes / GiB:.1f} GiB"

    text = f" It uses {_words(kept)}: without {'it' if len(kept) == 1 else 'them'}, {plan(plain)}"
    if len(kept) > 1 and before is not plain and before.best is not None:
        text += f"; with {_words(kept[:-1])} alone, {plan(before)}"
    cost = ""
    if best.setup.offload_activations:
        plain_speed = run_cost(model.arch, replace(best.setup, offload_activations=False), gpu.spec).tokens_per_second
        slower = 1 - best.tokens_per_second / plain_speed
        cost = (f" Offloading holds {best.host_bytes / GiB:.1f} GiB in host RAM and makes each step about "
                f"{slower:.0%} slower (host copies at {HOST_LINK_BYTES_PER_S / 1e9:.0f} GB/s)"
                + ("; the other savers cost no time." if len(kept) > 1 else "."))
    return f"{text}.{cost}"


def _short_of_host(trial: Recommendation, gpu: GpuTarget, host_memory: int) -> str:
    """When only the machine's RAM stands between offloading and a fit, say so."""
    short = [o for o in trial.options if fits(o.device_used_bytes, gpu.memory_bytes)
             and not fits_host(o.host_bytes, host_memory)]
    if not short:
        return ""
    least = min(short, key=lambda o: o.host_bytes)
    return (f" With offloaded activations, {_label(least.setup)} fits in GPU memory but needs "
            f"{least.host_bytes / GiB:.1f} GiB of host RAM, more than {1 - HEADROOM:.0%} of the "
            f"{host_memory / GiB:.1f} GiB planned for (--host-ram-gib).")


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _recommend(base: TrainSetup, model: ModelSpec, gpu: GpuTarget, dataset_tokens: int | None, epochs: float,
               max_quality: bool, usd_per_hour: float | None, usd_per_kwh: float | None,
               methods: tuple, host_memory: int | None) -> tuple[Recommendation, int]:
    """The recommendation for ``base`` as it is, and the rank of its choice in :func:`preference`
    (lower is better; the list's length when nothing fits)."""
    options = search(model, base, gpu, dataset_tokens, epochs, usd_per_hour, usd_per_kwh, methods, host_memory)
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
    if major := fmt_shares(o.time_shares, most=3):
        text += f" ({major} of a step)"
    if o.hours is not None:
        text += f", {o.hours:.1f} h"
        if o.cost_usd is not None:
            text += f", ${o.cost_usd:,.2f}"
    text += "." + padding_note(model.arch, s, gpu.spec, o.tokens_per_second)
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
        name = s.adapter_name[0].upper() + s.adapter_name[1:]
        text += (f" {name} on a 16-bit base needs {lora.device_used_bytes / GiB:.1f} GiB at the least ({room} "
                 f"on {fmt_gib(mem)}), so the base is quantized.")
    if s.is_peft:
        text += _adapter_words(model, gpu, o)
    return text


_ADAPTERS: tuple[dict[str, Any], ...] = (
    {"peft": "lora", "use_dora": False}, {"peft": "lora", "use_dora": True}, {"peft": "adalora"}, {"peft": "ia3"},
    {"peft": "prompt", "modules_to_save": ()},
    {"peft": "prefix", "modules_to_save": (), **PREFIX_CHECKPOINTING},
)
"""The adapters a LoRA/QLoRA pick is set beside, on its own base (prefix tuning without checkpointing)."""


def _adapter_words(model: ModelSpec, gpu: GpuTarget, o: Option) -> str:
    """The other adapters on the chosen base, each in the estimator's and the time model's numbers:
    memory, speed against the pick, and how many parameters it trains (fewer adapt less)."""
    parts = []
    for change in _ADAPTERS:
        try:
            other = replace(o.setup, **change)
            used = estimate(model, other)
        except PlannerError:
            continue  # cannot combine with the pick's other settings
        if other == o.setup:
            continue
        speed = run_cost(model.arch, other, gpu.spec).tokens_per_second
        where = "" if fits(used.device_used_bytes, gpu.memory_bytes) else ", does not fit"
        off = " (checkpointing off)" if other.grad_checkpointing != o.setup.grad_checkpointing else ""
        parts.append(f"{other.adapter_label}{off} {used.device_used_bytes / GiB:.1f} GiB{where}, ~{speed:,.0f} "
                     f"tokens/s ({speed / o.tokens_per_second - 1:+.0%}), {fmt_count(used.params_trainable)} trained")
    if not parts:
        return ""
    return (f" Other adapters on this base ({o.setup.adapter_label}: "
            f"{fmt_count(estimate(model, o.setup).params_trainable)} trained): " + "; ".join(parts)
            + ". The fewer parameters an adapter trains, the less it can change the model.")
