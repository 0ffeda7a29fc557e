"""The CUDA autocast table precise mode replays covers torch's own list of autocast ops."""

import importlib.util
import re
from pathlib import Path

import pytest

from planner.autocast_policy import CUDA, FP32, FP32_DTYPE, LOWER, PROMOTE


def _torch_cuda_lists() -> dict[str, set[str]]:
    # read as text: importing it needs torch's test-only dependencies
    spec = importlib.util.find_spec("torch.testing._internal.autocast_test_lists")
    if spec is None or spec.origin is None:
        pytest.skip("torch's autocast test lists are not installed")
    text = Path(spec.origin).read_text()
    cuda = text[text.index("class AutocastTestLists"):text.index("class AutocastCPUTestLists")]
    lists = {}
    for name in ("torch_fp16", "torch_fp32", "torch_need_autocast_promote", "nn_fp16", "nn_fp32",
                 "linalg_fp16", "methods_fp16", "methods_fp32"):
        body = cuda[cuda.index(f"self.{name} = ["):]
        body = body[:body.index("\n        ]")]
        lists[name] = set(re.findall(r'^\s*\("(\w+)"', body, flags=re.M))
    return lists


def test_every_cuda_autocast_op_has_its_rule():
    lists = _torch_cuda_lists()
    lower = lists["torch_fp16"] | lists["nn_fp16"] | lists["linalg_fp16"] | lists["methods_fp16"]
    fp32 = lists["torch_fp32"] | lists["nn_fp32"] | lists["methods_fp32"]
    assert lower and fp32 and lists["torch_need_autocast_promote"]
    for op in lower:
        assert CUDA.rule(op) == LOWER, op
    for op in fp32:
        assert CUDA.rule(op) in (FP32, FP32_DTYPE), op
    for op in lists["torch_need_autocast_promote"]:
        assert CUDA.rule(op) == PROMOTE, op


def test_methods_are_found_under_their_dunder_names():
    assert CUDA.rule("__matmul__") == CUDA.rule("__rmatmul__") == LOWER
    assert CUDA.rule("__pow__") == FP32
    assert CUDA.rule("__add__") is None and CUDA.rule("silu") is None
