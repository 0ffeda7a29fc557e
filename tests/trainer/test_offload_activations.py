"""Activation offloading (issue 15 point 2): with checkpointing, each layer's saved input goes
through transformers' own ``offload`` (torch's ``save_on_cpu``); the run computes exactly what
the plain run does, and the bytes it moves are the planner's host-RAM term."""

from __future__ import annotations

import pytest
from conftest import run_inprocess, steps, write_config

from trainer.config import ConfigError, TrainConfig


def test_offloading_needs_checkpointing(demo_dir):
    with pytest.raises(ConfigError, match="needs grad_checkpointing") as err:
        TrainConfig(model=str(demo_dir / "model"), dataset="d.jsonl", grad_checkpointing=False,
                    offload_activations=True)
    assert err.value.field == "offload_activations"


def test_transformers_offloads_through_save_on_cpu():
    """The one library behaviour this relies on (transformers 5.x): ``activation_checkpointing_enable``
    takes ``offload`` and wraps torch's checkpoint in ``save_on_cpu``."""
    import inspect

    from transformers import PreTrainedModel, modeling_utils

    assert "offload" in inspect.signature(PreTrainedModel.activation_checkpointing_enable).parameters
    assert "save_on_cpu" in inspect.getsource(PreTrainedModel._activation_checkpointing_enable)
    assert hasattr(modeling_utils, "save_on_cpu")


def test_an_offloaded_run_equals_the_plain_run_and_moves_what_the_planner_predicts(demo_dir, tmp_path, monkeypatch):
    import torch
    from torch.autograd.graph import saved_tensors_hooks

    from planner.catalog import resolve_model
    from planner.memory import estimate
    from trainer.config import setup_of

    packed: list[tuple[tuple[int, ...], int]] = []
    real_init = saved_tensors_hooks.__init__

    def counting(self, pack, unpack):  # every saved-tensor hook, counting what offloading packs
        if type(self).__name__ == "SaveOnHost":
            def pack_counted(t, _pack=pack):
                packed.append((tuple(t.shape), t.element_size()))
                return _pack(t)
            return real_init(self, pack_counted, unpack)
        return real_init(self, pack, unpack)

    monkeypatch.setattr(saved_tensors_hooks, "__init__", counting)
    torch.set_num_threads(1)
    losses = {}
    for offload in (False, True):
        config = write_config(demo_dir, tmp_path / f"run-{offload}", max_steps=4, save_steps=0, warmup_steps=1,
                              offload_activations=offload)
        code, events = run_inprocess(config)
        assert code == 0, events[-3:]
        losses[offload] = [s["loss"] for s in steps(events)]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
    assert losses[True][-1] < losses[True][0]

    cfg = TrainConfig.load(tmp_path / "run-True.json")
    spec = resolve_model(cfg.model)
    layers = spec.arch.num_layers
    assert packed and len(packed) % layers == 0  # one checkpointed input per layer per step
    # the planner's host-RAM term per token, against the bytes really packed per token
    est = estimate(spec, setup_of(cfg, "fp32"))
    per_token_predicted = est.host_bytes / est.setup.tokens
    batch, tokens, hidden = packed[0][0]
    per_token_packed = layers * hidden * packed[0][1]
    assert hidden == spec.arch.hidden_size and per_token_packed == per_token_predicted


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    model.activation_checkpointing_enable(offload=True)
    return model.train()


def test_without_an_accelerator_transformers_alone_asks_for_pinned_memory():
    """Why planner/simulate/offload.py replaces the hooks (transformers 5.24, torch 2.13): when
    this starts passing upstream, the replacement can keep torch's hooks on the CPU."""
    import torch
    import transformers

    if torch.accelerator.is_available():
        pytest.skip("an accelerator provides pinned memory")
    ids = torch.randint(0, 64, (1, 8))
    with pytest.raises(RuntimeError, match="pin_memory"):
        _tiny_llama()(input_ids=ids, labels=ids).loss.backward()
    assert transformers.__version__.startswith("5.")


def test_the_hooks_count_host_bytes_and_release_them():
    import torch

    from planner.simulate.offload import host_offload

    ids = torch.randint(0, 64, (2, 8))
    with host_offload() as host:
        model = _tiny_llama()
        loss = model(input_ids=ids, labels=ids).loss
        assert host.packed == 2 and host.current == 2 * 2 * 8 * 16 * 4  # layers x batch x tokens x hidden x fp32
        loss.backward()
    assert host.current == 0 and host.peak == 2 * 2 * 8 * 16 * 4
