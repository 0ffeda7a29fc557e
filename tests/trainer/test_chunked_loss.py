"""The chunked loss (planner/simulate/chunked_loss.py): the standard loss's value and gradients, one
chunk's logits at a time, and a real demo run that trains as the standard one does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_inprocess, steps, write_config

os.environ.setdefault("OMP_NUM_THREADS", "1")

TOL = 1e-5


def _cfg(demo: Path, **overrides: Any) -> Any:
    from trainer.config import TrainConfig

    base = TrainConfig.load(demo / "run.json").to_dict()
    base.update(method="lora", precision="fp32", device="cpu", lora_dropout=0.0, **overrides)
    return TrainConfig.from_dict(base)


def _model(cfg: Any) -> Any:
    import torch

    from trainer.loading import Runtime, load_model

    torch.manual_seed(0)
    model = load_model(cfg, Runtime("cpu", "fp32"))
    # a freshly initialised LoRA B is zero: give every trainable weight a value so its gradients
    # (and those of what comes before it) are not trivially equal
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def _batch(cfg: Any, n: int = 4) -> dict[str, Any]:
    from trainer.data import collate, prepare_data
    from trainer.loading import load_tokenizer

    tok = load_tokenizer(cfg)
    data = prepare_data(cfg, tok)
    return collate(tok)([data.train[i] for i in range(n)])


def _grads(model: Any, loss: Any) -> dict[str, Any]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _assert_same(model: Any, batch: dict[str, Any], num_items: Any = None) -> None:
    """The model's own loss (transformers' ForCausalLMLoss over the whole logits) against the
    chunked one: the loss, the hidden states' gradient and every trainable parameter's gradient."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from planner.simulate.chunked_loss import causal_lm_loss, chunked_cross_entropy, lm_parts

    model.train()
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    standard = model(**batch, **extra).loss
    want = _grads(model, standard)
    chunked = causal_lm_loss(model, batch, num_items)
    got = _grads(model, chunked)
    assert abs(standard.item() - chunked.item()) <= TOL
    assert set(got) == set(want) and want
    for name in want:
        assert torch.allclose(got[name], want[name], atol=TOL, rtol=0), name

    # the hidden states' gradient, and the head's parameters, at the loss itself
    decoder, head, config = lm_parts(model)
    with torch.no_grad():
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    shift = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[..., 1:].contiguous()
    cap = getattr(config, "final_logit_softcapping", None)
    params = [p for p in head.parameters() if p.requires_grad]
    results = []
    for which in ("standard", "chunked"):
        h = hidden.clone().requires_grad_(True)
        if which == "standard":
            logits = head(h)
            logits = torch.tanh(logits / cap) * cap if cap else logits
            loss = ForCausalLMLoss(logits, None, logits.shape[-1], num_items, shift_labels=shift)
        else:
            loss = chunked_cross_entropy(h, head, shift, num_items, cap)
        results.append((loss.detach(), torch.autograd.grad(loss, [h, *params])))
    (l0, g0), (l1, g1) = results
    assert abs(l0.item() - l1.item()) <= TOL
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, atol=TOL, rtol=0)


def test_assistant_only_masks_and_modules_to_save_lm_head(demo_dir):
    """The demo's own setup: lm_head trained in full through peft's ModulesToSaveWrapper."""
    cfg = _cfg(demo_dir)
    assert cfg.modules_to_save == ("lm_head",) and cfg.assistant_only_loss
    batch = _batch(cfg)
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    model = _model(cfg)
    _assert_same(model, batch)
    # gradient accumulation: the Trainer's count over the accumulated batch divides the sum
    _assert_same(model, batch, num_items=int((batch["labels"][..., 1:] != -100).sum()) * 3)


def test_packed_batch(demo_dir):
    cfg = _cfg(demo_dir, packing=True, max_seq_len=128)
    _assert_same(_model(cfg), _batch(cfg, n=2))


def test_lora_on_lm_head(demo_dir):
    cfg = _cfg(demo_dir, lora_targets=("q_proj", "v_proj", "lm_head"), modules_to_save=())
    model = _model(cfg)
    from planner.simulate.chunked_loss import lm_parts

    head = lm_parts(model)[1]
    assert sorted(n.split(".")[0] for n, p in head.named_parameters() if p.requires_grad) == ["lora_A", "lora_B"]
    _assert_same(model, _batch(cfg))


def _tiny(cfg: Any, config: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).float()


def test_tied_embeddings_full_fine_tuning(demo_dir):
    from transformers import LlamaConfig

    cfg = _cfg(demo_dir)
    config = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = _tiny(cfg, config)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    _assert_same(model, _batch(cfg))


def test_gemma2_logit_softcap(demo_dir):
    from transformers import Gemma2Config

    cfg = _cfg(demo_dir)
    config = Gemma2Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=3.0,
                          attn_implementation="eager")
    model = _tiny(cfg, config)
    assert model.config.final_logit_softcapping == 3.0
    _assert_same(model, _batch(cfg))


def _peak_bytes(loss_fn: Any) -> tuple[int, int]:
    """(the most bytes of storage alive at once while ``loss_fn`` runs forward and backward, the
    largest storage alive at that moment), counted by precise mode's own live-storage counter on
    real CPU tensors."""
    from planner.simulate.meta import live_bytes_class

    counter = live_bytes_class()(gpu_kernels=False)
    with counter:
        loss_fn().backward()
    return counter.peak, max(counter.peak_live.values())


def test_memory_peak_is_one_chunk_of_logits():
    import torch

    from planner.loss import loss_chunk_tokens
    from planner.simulate.chunked_loss import chunked_cross_entropy

    tokens, hidden_size, vocab = 4096, 64, 8192
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,))

    def standard() -> Any:
        return torch.nn.functional.cross_entropy(head(hidden).float(), labels)

    measured = {name: _peak_bytes(fn) for name, fn in (
        ("standard", standard), ("chunked", lambda: chunked_cross_entropy(hidden, head, labels)))}
    peaks = {name: peak for name, (peak, _) in measured.items()}
    whole = tokens * vocab * 4
    chunk = loss_chunk_tokens(tokens, vocab, hidden_size) * vocab * 4
    print(f"peak bytes: standard {peaks['standard']}, chunked {peaks['chunked']} "
          f"(whole logits {whole}, one chunk {chunk}); largest tensor at the peak: "
          f"standard {measured['standard'][1]}, chunked {measured['chunked'][1]}")
    assert measured["standard"][1] >= whole
    # the largest is a chunk's logits, or the head's gradient (which the standard loss has too)
    assert measured["chunked"][1] <= max(chunk, vocab * hidden_size * 4)
    assert peaks["standard"] >= 2 * whole  # logits and their log-softmax, at least
    # a chunk's logits, its log-softmax and gradient, plus the hidden-sized and weight-sized buffers
    assert peaks["chunked"] <= 4 * chunk + 3 * (tokens + vocab) * hidden_size * 4
    assert peaks["chunked"] * 8 < peaks["standard"]


def test_more_than_one_process_is_refused(demo_dir, tmp_path):
    """The decoder is called beneath the DDP/FSDP wrapper: a run refuses it with one line."""
    from trainer.config import CHUNKED_ONE_PROCESS, ConfigError

    _cfg(demo_dir, loss="chunked")
    _cfg(demo_dir, num_processes=2)
    with pytest.raises(ConfigError, match="one process"):
        _cfg(demo_dir, loss="chunked", num_processes=2)  # refused by TrainConfig itself: the app marks the field
    code, events = run_inprocess(write_config(demo_dir, tmp_path / "two", loss="chunked", num_processes=2,
                                              method="lora", max_steps=2))
    errors = [e for e in events if e["event"] == "error"]
    assert code == 2 and len(errors) == 1 and errors[0]["type"] == "config"
    assert errors[0]["message"] == CHUNKED_ONE_PROCESS


def _demo_losses(demo_dir: Path, run_dir: Path, **overrides: Any) -> dict[str, list[float]]:
    code, events = run_inprocess(write_config(demo_dir, run_dir, save_steps=0, **overrides))
    assert code == 0, events[-3:]
    return {"step": [e["loss"] for e in steps(events)],
            "eval": [e["eval_loss"] for e in events if e["event"] == "eval"]}


def test_demo_run_trains_as_the_standard_loss(demo_dir, tmp_path, monkeypatch):
    """A real CPU run of the demo (QLoRA, lm_head in modules_to_save, gradient accumulation): the
    loss falls, and with the same seed every step's loss is the standard run's."""
    from planner.simulate import chunked_loss

    calls = []
    real = chunked_loss.causal_lm_loss
    monkeypatch.setattr(chunked_loss, "causal_lm_loss", lambda *a: calls.append(1) or real(*a))
    losses = {loss: _demo_losses(demo_dir, tmp_path / loss, loss=loss, max_steps=6, gradient_accumulation_steps=2)
              for loss in ("standard", "chunked")}
    assert len(calls) == 12  # every micro-batch of the chunked run, none of the standard one
    chunked = losses["chunked"]["step"]
    assert len(chunked) == 6 and chunked[-1] < chunked[0]
    assert chunked == pytest.approx(losses["standard"]["step"], abs=1e-4)


def test_demo_run_evaluates_with_the_standard_loss(demo_dir, tmp_path):
    """Evaluation (no gradients) keeps transformers' loss beside the chunked training steps."""
    losses = {loss: _demo_losses(demo_dir, tmp_path / loss, loss=loss, max_steps=3, val_split=0.02, eval_steps=3)
              for loss in ("standard", "chunked")}
    assert len(losses["chunked"]["eval"]) == 1
    for kind in ("step", "eval"):
        assert losses["chunked"][kind] == pytest.approx(losses["standard"][kind], abs=1e-4)


def test_per_expert_moe_lora(moe_demo_dir):
    """A Mixtral whose experts are rebuilt per expert for LoRA (trainer/loading.py's layout)."""
    from trainer.loading import model_layout

    cfg = _cfg(moe_demo_dir)
    with model_layout(cfg):
        model = _model(cfg)
        _assert_same(model, _batch(cfg))


def test_torchtunes_chunked_output_loss_and_unsloths_chunk_budget_are_the_standard_loss(demo_dir):
    """The two stacks' losses (planner/loss.py: chunked-output, and chunked with a byte budget per
    chunk) compute transformers' loss and gradients, with and without a given item count."""
    import torch

    from planner.simulate.chunked_loss import causal_lm_loss, chunked_output_loss

    cfg = _cfg(demo_dir)
    model, batch = _model(cfg), _batch(cfg)
    model.train()
    for num_items in (None, torch.tensor(40)):
        extra = {} if num_items is None else {"num_items_in_batch": num_items}
        want_loss = model(**batch, **extra).loss
        want = _grads(model, want_loss)
        for loss in (chunked_output_loss(model, batch, num_items),
                     causal_lm_loss(model, batch, num_items, chunk_bytes=32 * 1024 * 4)):  # a few chunks
            assert abs(loss.item() - want_loss.item()) <= TOL
            got = _grads(model, loss)
            assert set(got) == set(want)
            for name in want:
                assert torch.allclose(got[name], want[name], atol=TOL, rtol=0), name


def test_demo_runs_with_the_stacks_losses_train_as_the_standard_one(demo_dir, tmp_path):
    """`loss: chunked-output` and `loss_chunk_mib` (what --stack torchtune and unsloth plan) run in
    the trainer too, so "Use this plan" trains the loss it planned."""
    standard = _demo_losses(demo_dir, tmp_path / "standard", loss="standard", max_steps=4)["step"]
    output = _demo_losses(demo_dir, tmp_path / "output", loss="chunked-output", max_steps=4)["step"]
    budget = _demo_losses(demo_dir, tmp_path / "budget", loss="chunked", loss_chunk_mib=1, max_steps=4)["step"]
    assert standard[-1] < standard[0]
    assert output == pytest.approx(standard, abs=1e-4) and budget == pytest.approx(standard, abs=1e-4)
