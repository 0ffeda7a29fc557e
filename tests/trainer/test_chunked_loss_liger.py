"""The chunked loss hands a plain LM head to Liger-Kernel's fused kernel on CUDA when it is
installed (planner/simulate/chunked_loss.py ``fused_kernel``), and keeps its own everywhere else.

No GPU and no Triton here: a stand-in module with Liger's class name and call signature
(``LigerFusedLinearCrossEntropyLoss(ignore_index, reduction, softcap)(weight, input, target,
bias)``, liger-kernel 0.5+) computes the reference loss, and the CUDA check is switched on, so
what is tested is the routing and the normalisation, not the Triton kernel."""

from __future__ import annotations

import sys
import types

import pytest


class _StandIn:
    calls: list[dict] = []

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", softcap: float | None = None):
        self.options = {"ignore_index": ignore_index, "reduction": reduction, "softcap": softcap}

    def __call__(self, weight, x, target, bias=None):
        import torch.nn.functional as F

        _StandIn.calls.append(self.options)
        logits = F.linear(x, weight, bias)
        if self.options["softcap"] is not None:
            logits = (logits / self.options["softcap"]).tanh() * self.options["softcap"]
        return F.cross_entropy(logits.float(), target, ignore_index=self.options["ignore_index"],
                               reduction=self.options["reduction"])


@pytest.fixture
def liger(monkeypatch):
    from planner.simulate import chunked_loss

    module = types.ModuleType("liger_kernel.transformers.fused_linear_cross_entropy")
    module.LigerFusedLinearCrossEntropyLoss = _StandIn  # type: ignore[attr-defined]
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(chunked_loss, "on_cuda", lambda t: True)
    _StandIn.calls = []
    chunked_loss._liger_loss.cache_clear()  # the module is built once per process: build it from the stand-in
    yield _StandIn
    chunked_loss._liger_loss.cache_clear()


def _case(head_lora: bool):
    import torch

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    if head_lora:
        from peft import LoraConfig, get_peft_model

        wrapper = torch.nn.Sequential(head)
        head = get_peft_model(wrapper, LoraConfig(r=2, target_modules=["0"])).base_model.model[0]
    hidden = torch.randn(2, 12, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 12))
    labels[0, :3] = -100
    return head, hidden, labels


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_a_plain_head_on_cuda_goes_to_the_fused_kernel_with_the_same_loss(liger, softcap, monkeypatch):
    from planner.simulate.chunked_loss import IGNORE_INDEX, chunked_cross_entropy

    head, hidden, labels = _case(head_lora=False)
    fused = chunked_cross_entropy(hidden, head, labels, softcap=softcap)
    assert liger.calls == [{"ignore_index": IGNORE_INDEX, "reduction": "sum", "softcap": softcap}]
    fused.backward()
    fused_grad = hidden.grad.clone()
    hidden.grad = None
    from planner.simulate import chunked_loss

    monkeypatch.setattr(chunked_loss, "on_cuda", lambda t: False)
    own = chunked_cross_entropy(hidden, head, labels, softcap=softcap)
    own.backward()
    assert fused.item() == pytest.approx(own.item(), rel=1e-6)  # normalised by the labelled tokens
    assert (fused_grad - hidden.grad).abs().max().item() < 1e-6


def test_lora_on_the_head_keeps_the_own_kernel(liger):
    from planner.simulate.chunked_loss import chunked_cross_entropy

    head, hidden, labels = _case(head_lora=True)
    chunked_cross_entropy(hidden, head, labels)
    assert liger.calls == []  # the kernel reads weight @ x alone: LoRA's update would be lost


def test_without_cuda_or_liger_the_own_kernel_runs(liger, monkeypatch):
    from planner.simulate import chunked_loss

    head, hidden, labels = _case(head_lora=False)
    monkeypatch.setattr(chunked_loss, "on_cuda", lambda t: False)
    chunked_loss.chunked_cross_entropy(hidden, head, labels)
    assert liger.calls == []
    monkeypatch.setattr(chunked_loss, "on_cuda", lambda t: True)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.fused_linear_cross_entropy", None)
    chunked_loss._liger_loss.cache_clear()
    chunked_loss.chunked_cross_entropy(hidden, head, labels)  # import fails: the own kernel
    assert liger.calls == []
