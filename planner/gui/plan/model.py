"""The Plan page's logic without Qt: form values -> four method variants -> stacked GiB bars.

Kept Qt-free so it is tested without widgets; the page only reads widgets into a
:class:`FormValues` and renders the :class:`Plan` it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from planner.catalog import resolve_model
from planner.catalog.gpus import find_gpu
from planner.cli_options import STACK_OPTIONS
from planner.launch import why_not_trainable
from planner.memory import Breakdown, Estimate, estimate
from planner.options import PREFIX_CHECKPOINTING, STACKS, TrainSetup
from planner.samples import SampleLengths
from planner.stacks import load_stack
from planner.targets import DEFAULT_CATALOG_GPU
from planner.units import GiB, fmt_gib

_D = TrainSetup()

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B"
DEFAULT_GPU_GIB = find_gpu(DEFAULT_CATALOG_GPU).memory_bytes / GiB
"""The default card's memory as the driver reports it (23.99 GiB for an RTX 4090)."""

TERMS: tuple[str, ...] = tuple(f.name for f in fields(Breakdown))
"""Stack order, bottom to top: the persistent state first, then what the step adds."""

TERM_LABELS: dict[str, str] = {
    "weights": "weights",
    "quant_state": "quant state",
    "adapters": "adapters",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "paged_optimizer": "paged optimizer states",
    "activations": "activations",
    "logits": "logits",
    "workspace": "workspace",
    "cuda_context": "CUDA context",
    "allocator_slack": "allocator slack",
}


@dataclass(frozen=True)
class FormValues:
    """What the Plan form holds, in the TrainSetup's own names and units."""

    model: str = DEFAULT_MODEL
    stack: str = _D.stack
    """The training stack planned for (planner/stacks.py)."""
    method: str = _D.method
    """The user's own method: highlighted; the chart always compares all four variants."""
    precision: str = _D.precision
    optimizer: str = _D.optimizer
    optimizer_in_backward: bool = _D.optimizer_in_backward
    """Applies to the full fine-tuning bar (the only method it is for)."""
    batch_size: int = _D.batch_size
    gradient_accumulation_steps: int = _D.gradient_accumulation_steps
    seq_len: int = _D.seq_len
    lora_r: int = _D.lora_r
    grad_checkpointing: bool = _D.grad_checkpointing
    offload_activations: bool = _D.offload_activations
    attention: str = _D.attention
    loss: str = _D.loss
    kernels: str = _D.kernels
    """Unsloth's fused LoRA kernels, or PyTorch's and peft's (the trainer's): planner.options.KERNELS."""
    gpu_gib: float = DEFAULT_GPU_GIB
    """Memory of the user's GPU; only draws the line and decides "fits"."""
    quant: str = "nf4"
    """The user's QLoRA base (the chart shows both 8-bit and 4-bit)."""
    double_quant: bool = _D.double_quant
    kbit_upcast: bool = _D.kbit_prepare
    adapter_dtype: str = _D.adapter_dtype
    lora_alpha: int = _D.lora_alpha
    lora_targets: str = "all-linear"
    modules_to_save: str = ""
    use_dora: bool = _D.use_dora
    """DoRA on the LoRA and QLoRA bars."""
    peft: str = _D.peft
    """The adapter on the LoRA and QLoRA bars (planner.options.PEFTS)."""
    virtual_tokens: int = _D.virtual_tokens
    num_gpus: int = _D.num_gpus
    sharding: str = _D.sharding
    offload: str = _D.offload
    packing: bool = _D.packing
    data: str = ""
    """The user's training data file: its examples' lengths (planner/lengths.py) set the padding
    and the data set's tokens; empty: every example fills the sequence length."""
    dataset_tokens: int = 10_000_000
    """Used when no data file is given (a file counts its own tokens)."""
    epochs: float = 1.0
    max_quality: bool = False


@dataclass(frozen=True)
class Variant:
    """One bar of the chart: a method (and QLoRA base format), the rest comes from the form."""

    method: str
    quant: str | None = None


# The columns every fine-tuning guide compares (LLaMA-Factory's table), minus the 2-bit base the
# trainer cannot run.
VARIANTS: tuple[Variant, ...] = (
    Variant("full"),
    Variant("lora"),
    Variant("qlora", "int8"),
    Variant("qlora", "nf4"),
)


def variant_label(variant: Variant, precision: str) -> str:
    """Short bar label. Full's label follows the precision since that alone sets its weight bytes."""
    if variant.method == "full":
        if precision.endswith("-mixed"):
            return "Full AMP"
        return "Full 32-bit" if precision == "fp32" else "Full 16-bit"
    if variant.method == "lora":
        return "LoRA"
    bits = {"int8": 8, "nf4": 4, "fp4": 4}.get(variant.quant or "nf4", 4)
    return f"QLoRA {bits}-bit"


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


FORM_KNOBS = {option: knob for option, knob in STACK_OPTIONS.items() if option in {f.name for f in fields(FormValues)}}
"""The form's fields a stack's preset may set (form field, named as the CLI option -> TrainSetup knob)."""


def stack_form_values(name: str, method: str, recipe_only: bool = False) -> dict[str, Any]:
    """The form fields a stack's defaults fill when it is chosen, with its recipe for ``method``;
    the estimator's defaults for the fields another stack sets, so switching back to hf undoes a
    preset. ``recipe_only``: only the knobs the stack sets per method (the method changed)."""
    stack, default = load_stack(name), TrainSetup(method=method)
    every = frozenset().union(*(load_stack(s).names for s in STACKS))
    if recipe_only:
        every = stack.names - frozenset(stack.settings)
    knobs = stack.knobs(method)
    return {field: knobs[knob].value if knob in knobs else getattr(default, knob)
            for field, knob in FORM_KNOBS.items() if knob in every}


def setup_for(values: FormValues, method: str, quant: str | None) -> TrainSetup:
    """The form's setup with this method, under its stack: the fields as they stand, except the
    knobs the stack's recipes set per method (torchtune's optimizer, litgpt's accumulation...),
    which each bar takes from its method's recipe. Raises PlannerError for an invalid value."""
    stack = load_stack(values.stack)
    # a per-method knob still at the recipe's value for the user's method follows each bar's recipe;
    # changed in the form, it is the user's own
    recipe = {knob: k.value for knob, k in stack.knobs(values.method).items()}
    per_method = {knob for field, knob in FORM_KNOBS.items() if knob in stack.names - frozenset(stack.settings)
                  and getattr(values, field) == recipe.get(knob, getattr(TrainSetup(method=values.method), knob))}
    form = {knob: getattr(values, field) for field, knob in FORM_KNOBS.items() if knob not in per_method}
    if "optimizer_in_backward" in form:
        form["optimizer_in_backward"] = form["optimizer_in_backward"] and method == "full"
    if values.peft == "prefix" and method != "full":  # prefix tuning trains without checkpointing
        form.update(PREFIX_CHECKPOINTING)
    return stack.apply(TrainSetup(
        method=method, quant=quant, batch_size=values.batch_size, seq_len=values.seq_len, attention=values.attention,
        lora_r=values.lora_r, lora_alpha=values.lora_alpha, lora_targets=_names(values.lora_targets) or ("",),
        modules_to_save=_names(values.modules_to_save) if method != "full" else (),
        use_dora=values.use_dora and method != "full",
        peft=values.peft if method != "full" else "lora", virtual_tokens=values.virtual_tokens,
        num_gpus=values.num_gpus, sharding=values.sharding, offload=values.offload, explicit=frozenset(form),
        **form))


def my_setup(values: FormValues) -> TrainSetup:
    """The user's own configuration (their method and QLoRA base)."""
    return setup_for(values, values.method, values.quant if values.method == "qlora" else None)


def with_data(setup: TrainSetup, values: FormValues, lengths: SampleLengths | None) -> tuple[TrainSetup, int]:
    """``setup`` with the data file's example lengths, and the data set's tokens: the file's own,
    cut at the sequence length as the trainer cuts them, else the form's Data set tokens."""
    if lengths is None:
        return setup, values.dataset_tokens
    return replace(setup, lengths=lengths), lengths.tokens(setup.seq_len)


def variants_for(values: FormValues) -> tuple[Variant, ...]:
    """The chart's bars: :data:`VARIANTS`, with the 4-bit bar in the user's own 4-bit format (fp4
    when they chose it), so their setup is always exactly one of the bars."""
    four_bit = values.quant if values.method == "qlora" and values.quant in ("nf4", "fp4") else "nf4"
    return tuple(Variant("qlora", four_bit) if v.quant == "nf4" else v for v in VARIANTS)


def mine_index(values: FormValues) -> int:
    """Which bar is the user's own setup (method and QLoRA base both match)."""
    quant = values.quant if values.method == "qlora" else None
    return variants_for(values).index(Variant(values.method, quant))


def build_setups(values: FormValues) -> tuple[TrainSetup, ...]:
    """One TrainSetup per variant; raises PlannerError if the form holds an invalid value."""
    return tuple(setup_for(values, v.method, v.quant) for v in variants_for(values))


def stack_gib(estimates: tuple[Estimate, ...]) -> dict[str, tuple[float, ...]]:
    """Per term, its GiB in each bar (the segment heights)."""
    return {term: tuple(getattr(e.breakdown, term) / GiB for e in estimates) for term in TERMS}


def stack_bottoms(stack: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
    """Per term, where its segment starts in each bar: the sum of the terms below it."""
    running = [0.0] * len(stack[TERMS[0]])
    bottoms: dict[str, tuple[float, ...]] = {}
    for term in TERMS:
        bottoms[term] = tuple(running)
        running = [r + h for r, h in zip(running, stack[term])]
    return bottoms


@dataclass(frozen=True)
class Plan:
    """Everything the chart and summary draw, computed once per form change."""

    model: str
    params_total: int
    labels: tuple[str, ...]
    methods: tuple[str, ...]
    estimates: tuple[Estimate, ...]
    heights: dict[str, tuple[float, ...]]
    bottoms: dict[str, tuple[float, ...]]
    mine: int
    """The bar of the user's own setup: highlighted, and what the precise check simulates."""

    @property
    def highlight(self) -> tuple[bool, ...]:
        return tuple(i == self.mine for i in range(len(self.estimates)))

    def notes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(warnings, assumptions) of the user's own estimate, warnings first: what makes the
        number a poor guide (including a plan the app's trainer cannot run), then what it assumes;
        a stack's cited knobs as one line (:meth:`stack_notes` has them whole)."""
        mine = self.estimates[self.mine]
        problem = why_not_trainable(mine.setup)
        trainer = (f"the app's trainer cannot run this plan: {problem}",) if problem else ()
        stack = load_stack(mine.setup.stack)
        cited = set(self.stack_notes())
        summary = stack.summary(mine.setup)
        return trainer + mine.warnings, tuple(a for a in mine.assumptions if a not in cited) + (
            (summary,) if summary else ())

    def stack_notes(self) -> tuple[str, ...]:
        """The stack's lines of the user's own estimate: each knob it changed with its source, and
        what it does not model (empty for this app's own stack)."""
        mine = self.estimates[self.mine]
        return tuple(load_stack(mine.setup.stack).assumptions(mine.setup))

    @property
    def device_used_gib(self) -> tuple[float, ...]:
        return tuple(e.device_used_bytes / GiB for e in self.estimates)

    @property
    def host_gib(self) -> tuple[float, ...]:
        """What each bar keeps in host RAM (offloaded activations or state), beside the GPU's."""
        return tuple(e.host_bytes / GiB for e in self.estimates)

    def fits(self, gpu_gib: float) -> tuple[bool, ...]:
        # device_used is what nvidia-smi shows, the number that must stay under the card's total
        return tuple(e.device_used_bytes <= gpu_gib * GiB for e in self.estimates)


def compute_plan(values: FormValues, lengths: SampleLengths | None = None) -> Plan:
    """Resolve the model and estimate every variant (with the data file's ``lengths``, once
    measured: unpacked bars at the data's longest example); raises PlannerError on bad input."""
    spec = resolve_model(values.model.strip())
    setups = [replace(s, lengths=lengths) for s in build_setups(values)]
    estimates = tuple(estimate(spec, s) for s in setups)
    heights = stack_gib(estimates)
    return Plan(
        model=spec.name,
        params_total=estimates[0].params_total,
        labels=tuple(variant_label(v, values.precision) for v in variants_for(values)),
        methods=tuple(v.method for v in VARIANTS),
        estimates=estimates,
        heights=heights,
        bottoms=stack_bottoms(heights),
        mine=mine_index(values),
    )


def summary_lines(plan: Plan, gpu_gib: float) -> tuple[str, ...]:
    """One line per bar: "LoRA: device used 18.4 GiB — fits on 24 GiB (5.6 GiB free)"."""
    lines = []
    for label, used, host, fits in zip(plan.labels, plan.device_used_gib, plan.host_gib, plan.fits(gpu_gib)):
        margin = abs(gpu_gib - used)
        verdict = (f"fits on {fmt_gib(gpu_gib)} ({margin:.1f} GiB free)" if fits
                   else f"does not fit on {fmt_gib(gpu_gib)} ({margin:.1f} GiB over)")
        lines.append(f"{label}: device used {used:.1f} GiB — {verdict}" + (f"; {host:.1f} GiB in host RAM"
                                                                            if host else ""))
    return tuple(lines)


CATEGORY_LABELS: dict[str, str] = {
    "parameters": "parameters",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "working": "activations and temporaries",
}
"""Precise mode's split of the peak, in row order. Its activations and temporaries are one row:
the two sides draw the line between them differently (the loss buffers are saved tensors to
the simulation, a term of their own to the estimate), so only their sum compares."""


def analytic_categories(b: Breakdown) -> dict[str, int]:
    """The analytic terms regrouped into precise mode's categories; they add up to peak allocated.

    CUDA context and allocator slack are left out: they lie beyond peak allocated in both.
    """
    return {
        "parameters": b.weights + b.quant_state + b.adapters,
        "gradients": b.gradients,
        "optimizer_state": b.optimizer,
        "working": b.activations + b.logits + b.workspace,
    }


@dataclass(frozen=True)
class CategoryRow:
    """One line of the Precise check's comparison table."""

    label: str
    simulated_bytes: int
    """Precise mode's bytes in this category at its peak."""
    analytic_bytes: int
    """The analytic estimate's terms mapped onto this category (:func:`analytic_categories`)."""

    @property
    def difference_bytes(self) -> int:
        """Analytic minus simulated: positive when the estimate is higher."""
        return self.analytic_bytes - self.simulated_bytes

    @property
    def difference_fraction(self) -> float | None:
        """The difference relative to the simulation; None when the simulation has none of it."""
        return self.difference_bytes / self.simulated_bytes if self.simulated_bytes else None


def compare_categories(simulated: dict[str, int], simulated_peak: int, analytic: Estimate) -> tuple[CategoryRow, ...]:
    """One row per category, then the "peak allocated" total (simulated ``categories`` sum to its peak)."""
    mapped = analytic_categories(analytic.breakdown)
    simulated = {**simulated, "working": simulated.get("activations", 0) + simulated.get("temporaries", 0)}
    rows = tuple(CategoryRow(label, simulated.get(key, 0), mapped[key]) for key, label in CATEGORY_LABELS.items())
    return rows + (CategoryRow("peak allocated", simulated_peak, analytic.peak_allocated_bytes),)


def largest_difference(rows: tuple[CategoryRow, ...]) -> str:
    """The sentence under the table: "Largest difference: gradients, the analytic estimate is 0.22 GiB higher"."""
    row = max(rows[:-1], key=lambda r: abs(r.difference_bytes))  # the total is not a category
    side = "higher" if row.difference_bytes > 0 else "lower"
    return (f"Largest difference: {row.label}, the analytic estimate is "
            f"{abs(row.difference_bytes) / GiB:.2f} GiB {side}.")
