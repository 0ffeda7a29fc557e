"""Training stacks as presets: what torchtune, axolotl, litgpt and Unsloth do by default, in the
estimator's own knobs (``--stack``; docs/stacks.md).

Each stack is a data file, ``resources/stacks/<name>.json``: the knob values its code and configs
set, each with the file and line it comes from at a named version, per method where the stack's
recipes differ, and what the estimator does not model about it. A preset only supplies defaults:
every knob the user sets explicitly wins.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from planner.errors import PlannerError
from planner.options import METHODS, PREFIX_CHECKPOINTING, STACKS, TrainSetup
from planner.resource_files import resource


@dataclass(frozen=True)
class Knob:
    value: Any
    source: str
    """Where the stack sets it: file:line at the stack's ``version``."""
    why: str


@dataclass(frozen=True)
class Stack:
    name: str
    title: str
    version: str
    """The repository and commit the sources were read at."""
    settings: Mapping[str, Knob]
    methods: Mapping[str, Mapping[str, Knob]]
    """Per method (full, lora, qlora): knobs its recipe for that method sets differently."""
    not_modelled: tuple[str, ...]

    def knobs(self, method: str) -> dict[str, Knob]:
        """Every knob the stack sets for ``method``."""
        return {**self.settings, **self.methods.get(method, {})}

    def apply(self, setup: TrainSetup, **changes: Any) -> TrainSetup:
        """``setup`` with ``changes``, under this stack: every knob the stack (or any of its method
        recipes) sets takes the preset's value for the setup's method, or else the estimator's
        default, unless the user chose it (``setup.explicit``) or ``changes`` sets it. A preset's
        value that cannot hold beside the user's choices gives way (the optimizer in backward needs
        full fine-tuning, one GPU and no accumulation; offloading needs checkpointing)."""
        values = {f.name: getattr(setup, f.name) for f in fields(setup)} | changes
        kept = setup.explicit | set(changes)
        method = values["method"]
        default = TrainSetup(method=method)
        preset = self.knobs(method)
        for name in self.names - kept:
            values[name] = preset[name].value if name in preset else getattr(default, name)
        if values["optimizer_in_backward"] and "optimizer_in_backward" not in kept and (
                method != "full" or values["num_gpus"] > 1 or values["gradient_accumulation_steps"] > 1):
            values["optimizer_in_backward"] = False
        if values["offload_activations"] and not values["grad_checkpointing"] and "offload_activations" not in kept:
            values["offload_activations"] = False
        return TrainSetup(**{**values, "stack": self.name})

    @property
    def names(self) -> frozenset[str]:
        """Every knob the stack sets, for any method."""
        return frozenset(self.settings).union(*(block.keys() for block in self.methods.values()))

    def changed(self, setup: TrainSetup) -> dict[str, Knob]:
        """The knobs of ``setup`` this stack set to something other than the estimator's default
        (what the estimate's text and JSON name)."""
        default = TrainSetup(method=setup.method)
        return {name: knob for name, knob in self.knobs(setup.method).items()
                if setup.method in _APPLIES.get(name, METHODS)
                and getattr(setup, name) == knob.value and knob.value != getattr(default, name)}

    def to_json(self, setup: TrainSetup) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "version": self.version,
                "changed": {name: {"value": k.value, "source": k.source, "why": k.why}
                            for name, k in self.changed(setup).items()},
                "not_modelled": list(self.not_modelled)}

    def summary(self, setup: TrainSetup) -> str | None:
        """One line: the knobs the stack changed, without their sources (None for ``hf``)."""
        if self.name == "hf":
            return None
        changed = ", ".join(f"{name} {_shown(k.value)}" for name, k in self.changed(setup).items())
        return f"stack {self.name}: " + (changed or "the same knobs as this app's trainer")

    def assumptions(self, setup: TrainSetup) -> list[str]:
        """The estimate's lines about the stack: each knob it changed, with its source, then what
        is not modelled."""
        if self.name == "hf":
            return []
        changed = self.changed(setup)
        head = f"stack {self.name}: {self.title}, read at {self.version}"
        lines = [f"{head}; it changes {len(changed)} knob(s)" if changed else f"{head}; the same knobs as ours"]
        lines += [f"{self.name}: {name} {_shown(k.value)}: {k.why} [{k.source}]" for name, k in changed.items()]
        return lines + [f"{self.name}, not modelled: {note}" for note in self.not_modelled]


def _shown(value: Any) -> str:
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)


_KNOBS = frozenset(f.name for f in fields(TrainSetup)) - {"stack", "explicit", "lengths"}
_APPLIES = {"kbit_prepare": ("qlora",), "double_quant": ("qlora",), "adapter_dtype": ("lora", "qlora"),
            "lora_dropout": ("lora", "qlora"), "optimizer_in_backward": ("full",)}
"""The methods a knob means something for (the others ignore it)."""


@functools.cache
def load_stack(name: str) -> Stack:
    """The stack ``name`` (one of :data:`STACKS`); PlannerError for any other."""
    if name not in STACKS:
        raise PlannerError(f"--stack '{name}' is not one of: {', '.join(STACKS)}", "stack")
    doc = json.loads(resource("stacks", f"{name}.json").read_text(encoding="utf-8"))

    def knobs(block: Mapping[str, Any]) -> dict[str, Knob]:
        unknown = set(block) - _KNOBS
        if unknown:  # a data file naming no TrainSetup field would silently do nothing
            raise ValueError(f"resources/stacks/{name}.json sets unknown knobs: {', '.join(sorted(unknown))}")
        return {k: Knob(v["value"], v["source"], v["why"]) for k, v in block.items()}

    return Stack(doc["name"], doc["title"], doc["version"], knobs(doc["settings"]),
                 {method: knobs(block) for method, block in doc["methods"].items()}, tuple(doc["not_modelled"]))


def planned(setup: TrainSetup, **changes: Any) -> TrainSetup:
    """``setup`` with ``changes`` (a method, an optimizer...), its stack's preset applied again for
    what changed: the one way to vary a stacked plan (a torchtune full fine-tuning plan turned
    into LoRA takes torchtune's LoRA recipe, not its full recipe's optimizer). Turned into full
    fine-tuning, a plan drops its adapter; prefix tuning keeps checkpointing off."""
    if changes.get("method") == "full":
        changes = {"peft": "lora", "use_dora": False, "modules_to_save": (), **changes}
    elif changes.get("peft", setup.peft) == "prefix":
        changes = {**changes, **PREFIX_CHECKPOINTING}
    return load_stack(setup.stack).apply(setup, **changes)
