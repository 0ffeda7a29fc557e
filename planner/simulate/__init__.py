"""Precise mode: run one real training step of the real model and count the bytes it allocates.

The transformers model is built from its config on the ``meta`` device (shapes and dtypes, no
storage), wrapped with the real peft LoRA, and a real forward, backward and optimizer step run on
meta tensors under a ``TorchDispatchMode`` that adds up every live storage. Nothing is allocated
in proportion to the model and no GPU is needed. One and two decoder layers are simulated and
the rest extrapolated: the layers are identical, so memory is affine in their number.

The only planner package that imports torch (lazily): the estimator stays torch-free. Its modules:
``meta`` (what a GPU step does that a meta step would not, and the live-bytes counter), ``model``
(the model and optimizer stepped), ``moe_layout`` (the per-expert MoE layout, which the trainer
builds too).

QLoRA runs bitsandbytes' own ``Linear4bit`` and 8-bit optimizers through their fake kernels.
MoE LoRA/QLoRA runs the trainer's per-expert layout (``moe_layout``); meta tensors carry
no routing, so every expert takes an equal share of the routed tokens.
Not simulated (a clear error, never a crash): int8 bases; sliding windows shorter than the
sequence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

from planner.calibration import ALLOCATOR_SLACK, CUBLAS_WORKSPACE, CUDA_CONTEXT
from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.memory import MOE_FUSED, MOE_PER_EXPERT, check_setup
from planner.options import TrainSetup
from planner.params import paged_state_bytes
from planner.simulate.meta import autocast_dtype, live_bytes_class, persistent_tensors, semantics_class
from planner.simulate.model import build_model, make_optimizer

PHASES = ("forward", "backward", "optimizer")
CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")
"""At a phase's peak: weights (quantization state and adapters included), gradients, optimizer
state, what the forward left alive for backward (saved tensors, checkpointed inputs, the loss's
buffers), and everything else (recomputed layers, gradients in flight, kernel workspaces)."""


@dataclass(frozen=True)
class StepPeaks:
    phases: dict[str, int]
    """Peak live bytes per phase."""
    categories: dict[str, dict[str, int]]
    """Per phase, its peak split by category (they add up to the phase's peak)."""

    host: int = 0
    """Peak bytes held in host memory by activation offloading."""

    def __getitem__(self, phase: str) -> int:
        return self.phases[phase]


@dataclass(frozen=True)
class Simulation:
    model: str
    layers_simulated: tuple[int, ...]
    phase_peaks: dict[str, int]
    """Peak live bytes during each phase of the step, extrapolated to every layer."""
    categories: dict[str, int]
    """The overall peak split by category (``CATEGORIES``), extrapolated the same way."""
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    assumptions: tuple[str, ...]
    host_bytes: int = 0
    """Host RAM held by activation offloading, extrapolated to every layer."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "mode": "simulated", "layers_simulated": list(self.layers_simulated),
            "phase_peaks": dict(self.phase_peaks), "categories": dict(self.categories),
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes, "device_used_bytes": self.device_used_bytes,
            "host_bytes": self.host_bytes, "assumptions": list(self.assumptions),
        }


def run_step(config: dict[str, Any], layers: int, setup: TrainSetup, device: str = "meta",
             policy: Any = None, target: str = "cuda") -> StepPeaks:
    """Peak live bytes per phase of one step of a ``layers``-layer copy of the model.

    On ``meta`` the autocast casts follow ``policy`` (CUDA's by default). ``device="cpu"`` runs
    the same step on real tensors under torch's own CPU autocast: the ground truth the meta run
    is checked against in the tests. ``target``: the device whose run is modelled, which decides
    how the optimizer steps (all tensors at once on ``cuda``, one by one on ``cpu``).
    """
    from unittest import mock

    import torch

    from planner.autocast_policy import CUDA
    from planner.simulate.chunked_loss import causal_lm_loss, chunked_output_loss
    from planner.simulate.fsdp import fake_world, shard
    from planner.simulate.in_backward import in_backward_class
    from planner.simulate.offload import host_offload

    cast_dtype = autocast_dtype(setup)
    foreach = target == "cuda"
    counter = live_bytes_class()(gpu_kernels=device == "meta")
    if device == "meta":
        semantics = semantics_class()(policy or CUDA if cast_dtype else None, cast_dtype)
        forward_ctx = semantics
    else:  # checkpoint replays torch's own autocast state when it recomputes
        semantics = None
        forward_ctx = torch.autocast("cpu", dtype=cast_dtype) if cast_dtype else contextlib.nullcontext()
    # transformers looks for packed sequences by reading position ids (data the meta device does
    # not have); the simulated batch is unpacked, which is what that check would find.
    offload = host_offload() if setup.offload_activations else contextlib.nullcontext()
    sharded = setup.sharding == "fsdp" and setup.num_gpus > 1
    world = fake_world(setup.num_gpus, counter.resized, device) if sharded else contextlib.nullcontext()
    with (world, mock.patch("transformers.masking_utils.find_packed_sequence_indices", lambda *a, **k: None),
          counter, offload as host):
        model = build_model(config, layers, setup, device, semantics)
        if sharded:
            model = shard(model, setup)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if setup.optimizer_in_backward:  # the trainer's: one optimizer per parameter, stepped in backward
            optimizer = in_backward_class()(trainable, lambda groups: make_optimizer(setup.optimizer, groups, foreach))
        else:
            optimizer = make_optimizer(setup.optimizer, trainable, foreach)
        if sharded:
            counter.reseed([t for group in persistent_tensors(model, optimizer).values() for t in group])
        ids = torch.randint(0, int(config.get("vocab_size", 2)), (setup.batch_size, setup.seq_len), device=device)
        for step in range(2):  # the second step has optimizer state and gradients from the first
            owners = _persistent_storages(model, optimizer, counter)
            persistent = {key for key, _ in set().union(*owners.values())}
            counter.reset_peak()
            if semantics:
                semantics.caching = True
            with forward_ctx:  # the trainer's loss: transformers' own, or the chunked one
                if setup.loss == "chunked":
                    loss = causal_lm_loss(model, {"input_ids": ids, "labels": ids},
                                          chunk_bytes=setup.loss_chunk_mib * 2**20)
                elif setup.loss == "chunked-output":
                    loss = chunked_output_loss(model, {"input_ids": ids, "labels": ids})
                else:
                    loss = model(input_ids=ids, labels=ids).loss
            if semantics:
                semantics.end_forward()
            at_peak = {"forward": (counter.peak, counter.peak_live, None)}
            counter.mark_saved(persistent)
            counter.reset_peak()
            loss.backward()
            del loss
            # the gradients backward created (none before it without accumulation) are gradients too
            grown = _persistent_storages(model, optimizer, counter)
            at_peak["backward"] = (counter.peak, counter.peak_live, counter.peak_saved)
            counter.reset_peak()
            optimizer.step()
            if setup.peft == "adalora":  # the trainer's callback, after the step and before zero_grad
                model.base_model.update_and_allocate(step)
            at_peak["optimizer"] = (counter.peak, counter.peak_live, counter.peak_saved)
            if step == 0:  # the Trainer frees the gradients after each step; accumulation keeps them
                optimizer.zero_grad(set_to_none=setup.gradient_accumulation_steps == 1)
    categories = {phase: _categorize(*at, owners if phase == "forward" else grown) for phase, at in at_peak.items()}
    return StepPeaks({phase: peak for phase, (peak, _, _) in at_peak.items()}, categories, host.peak if host else 0)


@contextlib.contextmanager
def quiet() -> Any:
    """The libraries' notes about what precise mode (or a generate session) runs are not the
    user's: transformers' FutureWarnings for its checkpointing API and its weight-loading progress
    bar, bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install kernels" (its logger,
    set before peft first imports it)."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _persistent_storages(model: Any, optimizer: Any, counter: Any) -> dict[str, set[tuple[int, int]]]:
    return {category: {counter.identity(t) for t in tensors}
            for category, tensors in persistent_tensors(model, optimizer).items()}


def _categorize(peak: int, live: dict[tuple[int, int], int], saved: int | None,
                owners: dict[str, set[tuple[int, int]]]) -> dict[str, int]:
    """``saved``: bytes at the peak that the forward left for backward; None for the forward's own
    peak, where everything not persistent counts as activations (the layers' saved tensors are
    most of it, and the rest cannot be told apart until the forward ends)."""
    split = dict.fromkeys(CATEGORIES, 0)
    for key, size in live.items():
        owner = next((name for name, keys in owners.items() if key in keys), None)
        split[owner or "temporaries"] += size
    split["temporaries"] += peak - sum(live.values())  # kernel transients that are never tensors
    moved = split["temporaries"] if saved is None else saved
    split["activations"], split["temporaries"] = moved, split["temporaries"] - moved
    return split


def simulate(model: ModelSpec, setup: TrainSetup, device: str = "cuda") -> Simulation:
    """Precise mode's prediction for a run on ``device``: ``cuda``, or ``cpu`` (torch's CPU
    autocast, the optimizer stepping tensor by tensor, no cuBLAS workspace, context or slack)."""
    from planner.autocast_policy import CPU

    check_setup(model.arch, setup)  # before any model is built: a bad rank costs minutes here
    if device == "cpu":  # offloading to host RAM moves nothing on a CPU run: it trains in that RAM
        setup = replace(setup, offload_activations=False)
    if not model.config:
        raise PlannerError("precise mode needs the model's config.json; this model has none")
    if setup.use_dora and setup.method == "qlora":
        raise PlannerError("cannot simulate DoRA on a 4-bit base: peft dequantizes each weight, which meta tensors "
                           "cannot; use `python -m planner estimate`")
    if setup.num_gpus > 1 and (setup.sharding != "fsdp" or setup.offload != "none"):
        raise PlannerError("precise mode simulates several GPUs with --sharding fsdp and no --offload (rank 0 of "
                           "the FSDP the trainer runs); use `estimate` for the others")
    window = model.config.get("sliding_window")
    if isinstance(window, int) and setup.seq_len > window and setup.attention == "sdpa":
        # an explicit band mask makes GPUs pick the memory-efficient kernel, which the meta device
        # lacks: the meta step would materialise the full score matrix instead
        raise PlannerError(f"cannot simulate sdpa's sliding-window mask beyond the window ({window} tokens); "
                           "use --attention flash_attention_2, or `python -m planner estimate`")
    if setup.peft == "prefix" and setup.attention == "sdpa":
        # the same explicit mask (queries fewer than keys): a GPU's memory-efficient kernel, the
        # full score matrix on the meta device
        raise PlannerError("cannot simulate sdpa under prefix tuning (its mask has more keys than queries); use "
                           "--attention flash_attention_2 or eager, or `python -m planner estimate`")
    # The affine part starts at the second layer where a layer's neighbour matters. Offloading frees
    # each layer's input once the next layer has run, so from the second layer on one more input is
    # alive inside a layer. FSDP all-gathers the next layer while one computes (backward prefetch):
    # a single layer has nothing to prefetch, and its backward peak is lower by a gathered layer.
    neighbours = setup.offload_activations or setup.sharding == "fsdp"
    first = 2 if neighbours and model.arch.num_layers > 2 else 1
    try:
        policy = CPU if device == "cpu" else None
        with quiet():
            one, two = (run_step(model.config, n, setup, policy=policy, target=device) for n in (first, first + 1))
    except PlannerError:
        raise
    except Exception as exc:  # an op the meta device lacks, an unknown layer type: say so, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlannerError(f"cannot simulate this model: {first[:200]}") from None
    layers = model.arch.num_layers

    def extrapolate(a: int, b: int) -> int:
        return a + (layers - first) * (b - a)

    # cuBLAS's workspace: taken from the caching allocator by a GPU's first matmul and held from
    # then on, a temporary the meta device (which runs no cuBLAS) never allocates
    cuda = device == "cuda"
    cublas, context, slack = (CUBLAS_WORKSPACE, CUDA_CONTEXT, ALLOCATOR_SLACK) if cuda else (0, 0, 0.0)
    # a paged optimizer's large states live in CUDA managed memory, outside the allocator the
    # counter stands for (simulated as ordinary tensors: meta tensors cannot be managed)
    paged = paged_state_bytes(model.arch, setup) if cuda else 0
    phases = {p: extrapolate(one[p], two[p]) + cublas - paged for p in PHASES}
    peak_phase = max(PHASES, key=phases.__getitem__)
    peak = phases[peak_phase]
    categories = {c: extrapolate(one.categories[peak_phase][c], two.categories[peak_phase][c]) for c in CATEGORIES}
    categories["temporaries"] += cublas
    categories["optimizer_state"] -= paged
    # the estimator's allocator model: slack over what the step adds on top of the weights
    transient = max(peak - min(phases.values()), 0)
    reserved = peak + int(slack * transient)
    notes = [f"simulated {first} and {first + 1} layers on the meta device and extrapolated to {layers} (identical "
             "layers)",
             "CUDA autocast replayed from torch's op table; cuBLAS workspace, CUDA context and allocator slack "
             "as in the analytic estimate" if cuda else
             "a CPU run: torch's CPU autocast, AdamW stepping tensor by tensor; no workspace, context or slack"]
    if model.arch.is_moe:
        notes.append("MoE: routing spread evenly over the experts (tokens x top_k / experts each); layout: "
                     + (MOE_PER_EXPERT if setup.is_peft else MOE_FUSED))
    if setup.kernels == "unsloth":
        notes.append("unsloth's fused kernels are not simulated: precise mode runs PyTorch's and peft's "
                     "modules (the estimate's kernels term is analytic: planner/fused_kernels.py)")
    elif setup.kernels == "compile":
        notes.append("torch.compile is not simulated: precise mode runs the modules eagerly, whose activations "
                     "the estimate counts for compiled ones too")
    if paged:
        notes.append(f"paged optimizer: {paged / 2**30:.2f} GiB of its state in CUDA managed memory (the estimator's "
                     "rule for which tensors bitsandbytes pages), outside allocated and reserved, in device used")
    if setup.offload_activations:
        notes.append("activation offloading: transformers' offload run with hooks that count host bytes (meta "
                     "tensors have no data to copy)")
    return Simulation(model.name, (first, first + 1), phases, categories, peak, reserved, reserved + context + paged,
                      tuple(notes), extrapolate(one.host, two.host))
