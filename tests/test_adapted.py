"""Which layers an adapter sits on (planner/adapted.py), as peft decides it."""

from planner.adapted import adapted, is_feedforward
from planner.catalog import resolve_model
from planner.options import TrainSetup


def _names(model_id: str, setup: TrainSetup) -> set[str]:
    arch = resolve_model(model_id).arch
    return {lin.name for block in arch.blocks for lin in block.linears if adapted(lin, setup)}


def test_ia3_takes_peft_defaults_keys_values_and_the_feedforward_down_projection():
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(peft="ia3")) == {"k_proj", "v_proj", "down_proj"}
    # Mixtral's experts as the trainer builds them (one nn.Linear per expert: w2 is the down projection)
    mixtral = _names("mistralai/Mixtral-8x7B-v0.1", TrainSetup(peft="ia3"))
    assert {"k_proj", "v_proj"} <= mixtral and any(name.endswith("w2") for name in mixtral)
    # named targets replace the defaults
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(peft="ia3", lora_targets=("q_proj",))) == {"q_proj"}


def test_lora_kinds_follow_their_targets_and_virtual_tokens_adapt_no_layer():
    every = _names("meta-llama/Llama-3.1-8B", TrainSetup())
    assert every == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(peft="adalora")) == every
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(peft="prompt")) == set()
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(peft="prefix", grad_checkpointing=False)) == set()
    assert _names("meta-llama/Llama-3.1-8B", TrainSetup(method="full")) == set()


def test_only_down_projections_are_feedforward():
    arch = resolve_model("meta-llama/Llama-3.1-8B").arch
    assert {lin.name for lin in arch.blocks[0].linears if is_feedforward(lin)} == {"down_proj"}
