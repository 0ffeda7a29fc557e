"""The per-expert MoE layout: one ``nn.Linear`` per expert projection, as checkpoints store them.

transformers 5 fuses each layer's experts into two 3-D parameters (``gate_up_proj``,
``down_proj``). bitsandbytes quantizes only ``nn.Linear`` modules, so under QLoRA the fused
experts stay 16-bit (fp32 after ``prepare_model_for_kbit_training``): about 147 GiB more for
Mixtral-8x7B. peft can only reach them through ``ParamWrapper`` (``target_parameters``), which
refuses LoRA dropout and re-materializes a full (experts, out, in) weight on every forward.

This module rebuilds each fused experts module as a list of experts whose projections are
plain ``nn.Linear`` modules named as in the checkpoint (``experts.3.w1`` for Mixtral,
``experts.3.gate_proj`` for Qwen-MoE and OLMoE), *before* the weights load, so bitsandbytes
quantizes and peft adapts expert by expert exactly as in a dense model. The router is left as
transformers builds it (not an ``nn.Linear``): unquantized and without LoRA, as the published
QLoRA recipes keep it. Used by the trainer (LoRA and QLoRA on MoE models) and by precise mode,
so the plan and the run are the same model.

Two library behaviours are worked around here and nowhere else (checked with transformers
5.24.0 and peft 0.21.2; ``tests/test_simulate_moe_layout.py`` fails when either stops being needed):

1. transformers' checkpoint conversion for these model types merges the experts. The loading
   conversion is replaced, for the model type, by its renamings only (Mixtral's
   ``block_sparse_moe`` -> ``mlp``), through transformers' public
   ``register_checkpoint_conversion_mapping``. ``save_pretrained`` reverses the renamings, so a
   merged export is a checkpoint in the usual per-expert layout that stock transformers loads.
2. peft rewrites per-expert targets (``w1``, ``gate_proj``, ...) of these model types into
   fused ``target_parameters`` (``convert_peft_config_for_transformers``). That rewrite is
   skipped for models in the per-expert layout only; every other model goes through it.

Both are patches of library state, so they are scoped: ``per_expert_loading`` holds them for
a block (the trainer: a whole run, in its own process; precise mode: one simulation) and puts
the libraries back as they were.

On the meta device (precise mode) routing has no data, so each expert takes an equal share of
the routed tokens: the uniform-routing assumption the analytic estimate also states.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from planner.errors import PlannerError

SUPPORTED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
"""Model types whose fused experts are rebuilt per expert (each one tested)."""

_replaced: dict[str, list[Any]] = {}
"""transformers' own conversions for the model types ``per_expert_loading`` replaced, meanwhile."""


@dataclass(frozen=True)
class ExpertNames:
    """Names of one expert's three projections in the checkpoint."""

    gate: str
    up: str
    down: str


def expert_names(model_type: str) -> ExpertNames:
    """The per-expert projection names, read off transformers' own conversion for the model type."""
    fused = _fused_conversions(model_type)
    gate_up = next(c for c in fused if c.target_patterns[0].endswith("gate_up_proj"))
    down = next(c for c in fused if c.target_patterns[0].endswith("down_proj"))
    gate, up = (_projection(p) for p in gate_up.source_patterns)
    return ExpertNames(gate, up, _projection(down.source_patterns[0]))


def _projection(pattern: str) -> str:
    # ".experts.*.w1.weight" -> "w1"
    return pattern.split(".experts.*.", 1)[1].removesuffix(".weight")


def _fused_conversions(model_type: str) -> list[Any]:
    """transformers' converters that merge this model type's experts (none on transformers 4,
    which keeps experts per expert, nor for dense models)."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightConverter
    except ImportError:
        return []
    mapping = _replaced.get(model_type) or get_checkpoint_conversion_mapping(model_type) or []
    return [c for c in mapping if isinstance(c, WeightConverter) and ".experts.*." in c.source_patterns[0]]


def is_fused(module: Any) -> bool:
    """A transformers 5 experts module: 3-D ``gate_up_proj`` and ``down_proj`` parameters."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return getattr(gate_up, "ndim", 0) == 3 and getattr(down, "ndim", 0) == 3


def needs_split(model_type: str) -> bool:
    """Whether this model type loads with fused experts here, so LoRA/QLoRA rebuild it per expert.

    Raises for MoE model types whose experts transformers fuses but this module was not tested on."""
    if not _fused_conversions(model_type):
        return False
    if model_type not in SUPPORTED:
        raise PlannerError(f"LoRA/QLoRA on MoE model type '{model_type}' is not supported yet (its experts would "
                           f"stay fused and unquantized); supported: {', '.join(SUPPORTED)}")
    return True


@functools.cache
def _classes() -> tuple[type, type]:
    import torch
    from torch import nn

    class Expert(nn.Module):
        """One expert: ``down(act(gate(x)) * up(x))``, three ``nn.Linear`` named as in the checkpoint."""

        def __init__(self, names: ExpertNames, hidden: int, intermediate: int, act_fn: Any, **factory: Any):
            super().__init__()
            self.names = names
            setattr(self, names.gate, nn.Linear(hidden, intermediate, bias=False, **factory))
            setattr(self, names.up, nn.Linear(hidden, intermediate, bias=False, **factory))
            setattr(self, names.down, nn.Linear(intermediate, hidden, bias=False, **factory))
            self.act_fn = act_fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate, up, down = (getattr(self, n) for n in (self.names.gate, self.names.up, self.names.down))
            return down(self.act_fn(gate(x)) * up(x))

    class ExpertList(nn.ModuleList):
        """Drop-in for a fused experts module: same call, same arithmetic (transformers' eager
        loop, expert by expert, in expert order), one ``Expert`` per index."""

        def __init__(self, fused: nn.Module, names: ExpertNames):
            factory = {"device": fused.gate_up_proj.device, "dtype": fused.gate_up_proj.dtype}
            num, hidden, intermediate = fused.down_proj.shape[0], fused.down_proj.shape[1], fused.down_proj.shape[2]
            super().__init__(Expert(names, hidden, intermediate, fused.act_fn, **factory) for _ in range(num))
            self.num_experts = num

        def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
            final = torch.zeros_like(hidden_states)
            for expert, slot, token in self._routes(top_k_index):
                out = self[expert](hidden_states[token]) * top_k_weights[token, slot, None]
                final.index_add_(0, token, out.to(final.dtype))
            return final

        def _routes(self, top_k_index: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
            """(expert, top-k slot, token indices) for every expert, those without tokens too: an
            expert skipped on one process but not another would leave DDP and FSDP reducing
            different gradients (an empty batch gives zero gradients, at no cost)."""
            if top_k_index.device.type == "meta":
                yield from self._uniform_routes(top_k_index)
                return
            with torch.no_grad():
                mask = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            for expert in range(self.num_experts):
                slot, token = torch.where(mask[expert])
                yield expert, slot, token

        def _uniform_routes(self, top_k_index: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
            # meta tensors carry no routing: the tokens x top_k slots are dealt out evenly
            tokens, k = top_k_index.shape
            share, extra = divmod(tokens * k, self.num_experts)
            for expert in range(self.num_experts):
                token = torch.arange(share + int(expert < extra), device=top_k_index.device)
                yield expert, torch.zeros_like(token), token

    return Expert, ExpertList


def split_experts(model: Any) -> int:
    """Replace every fused experts module of ``model`` by an ``ExpertList``; returns how many.

    The new projections are created on the fused parameters' device and dtype, uninitialised:
    call it before weights load (``per_expert_class``) or on the meta device (precise mode)."""
    names = expert_names(model.config.model_type)
    _, expert_list = _classes()
    fused = [(name, module) for name, module in model.named_modules() if is_fused(module)]
    for name, module in fused:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, expert_list(module, names))
    return len(fused)


def per_expert_class(cls: type) -> type:
    """``cls`` (a transformers model class) building its experts per expert from ``__init__`` on.

    ``from_pretrained`` constructs the model, then quantizes its ``nn.Linear`` modules, then
    loads: splitting at the end of ``__init__`` puts the experts in place before both. The
    subclass keeps ``cls``'s name, so ``save_pretrained`` writes the stock architecture name
    and transformers' conversion lookup by class name sees the stock class."""

    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        cls.__init__(self, config, *args, **kwargs)
        split_experts(self)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def has_split_experts(model: Any) -> bool:
    expert_list = _classes()[1]
    return any(isinstance(m, expert_list) for m in model.modules())


@contextlib.contextmanager
def per_expert_loading(model_type: str) -> Iterator[None]:
    """Within the block, ``model_type`` loads per expert and peft keeps per-expert targets.

    Replaces transformers' conversion for the model type by its renamings (the expert merging
    dropped) and wraps peft's target conversion (see the module docstring); both as they were
    afterwards. The trainer holds it for a whole run: loading, resuming and saving."""
    from transformers.conversion_mapping import (
        USER_REGISTERED_MAPPINGS,
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )
    from transformers.core_model_loading import WeightRenaming

    if model_type in _replaced:  # already inside a block for this model type
        with peft_targets_as_given():
            yield
        return
    stock = get_checkpoint_conversion_mapping(model_type)
    registered_before = model_type in USER_REGISTERED_MAPPINGS
    renamings = [c for c in stock or [] if isinstance(c, WeightRenaming)]
    register_checkpoint_conversion_mapping(model_type, renamings, overwrite=True)
    _replaced[model_type] = stock or []
    try:
        with peft_targets_as_given():
            yield
    finally:
        del _replaced[model_type]
        if stock is not None:
            register_checkpoint_conversion_mapping(model_type, stock, overwrite=True)
        if not registered_before:
            USER_REGISTERED_MAPPINGS.discard(model_type)


@contextlib.contextmanager
def peft_targets_as_given() -> Iterator[None]:
    """Within the block, peft's v4-to-v5 target conversion skips models in the per-expert layout."""
    import peft.utils.transformers_weight_conversion as conversion

    original = conversion.convert_peft_config_for_transformers

    @functools.wraps(original)
    def convert(peft_config: Any, model: Any, *args: Any, **kwargs: Any) -> None:
        if has_split_experts(model):
            return None  # the targets already name real per-expert nn.Linear modules
        return original(peft_config, model, *args, **kwargs)

    conversion.convert_peft_config_for_transformers = convert
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original
