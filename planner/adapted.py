"""Which linear layers a run's adapter sits on: peft's targeting rules (LoRA's ``target_modules``,
IA3's defaults and feedforward layers), shared by the parameter count, the activations and the
time model."""

from __future__ import annotations

from planner.catalog.arch import Linear
from planner.catalog.hf_config import EXPERT_NAMES
from planner.options import TrainSetup

_EXPERT_DOWN = {down for _, _, down in EXPERT_NAMES.values()}
DOWN_NAMES = ("down_proj", "c_proj", "fc2")
"""How the MLP's down projection is named (experts may name theirs otherwise: ``EXPERT_NAMES``)."""


def is_down(linear: Linear) -> bool:
    """The MLP's (or an expert's) down projection: it reads the intermediate activation."""
    if linear.role == "expert" and linear.name in _EXPERT_DOWN:
        return True
    return linear.name.endswith(DOWN_NAMES)


def feedforward_names(targets: list[str]) -> list[str]:
    """The ``targets`` IA3 treats as feedforward (peft ``feedforward_modules``): down projections."""
    return [t for t in targets if t.endswith(DOWN_NAMES + tuple(_EXPERT_DOWN))]


def lora_targeted(linear: Linear, targets: tuple[str, ...]) -> bool:
    """peft's rule: ``all-linear`` hits every ``nn.Linear`` but the LM head (an MoE router is
    not one); names match as suffixes."""
    if linear.role == "router":
        return False
    if "all-linear" in targets:
        return True
    return any(linear.name == t or linear.name.endswith("." + t) for t in targets)


_IA3_ATTENTION = {"k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv"}


def is_feedforward(linear: Linear) -> bool:
    """IA3 scales a feedforward layer's input, any other layer's output (peft
    ``feedforward_modules``: the MLP's down projection in peft's defaults)."""
    return is_down(linear)


def adapted(linear: Linear, setup: TrainSetup) -> bool:
    """Whether the run's adapter sits on this linear: LoRA, DoRA and AdaLoRA on ``lora_targets``;
    IA3 on peft's defaults, the paper's keys, values and MLP down projection (or on
    ``lora_targets`` when they name modules); prompt and prefix tuning on none."""
    if not setup.adapts_linears or linear.role == "router":
        return False
    if setup.peft == "ia3" and setup.lora_targets == ("all-linear",):
        return is_feedforward(linear) or linear.name.split(".")[-1] in _IA3_ATTENTION
    return lora_targeted(linear, setup.lora_targets)
