"""planner/inference.py against real generation: the demo Llama's ``model.generate`` on the CPU,
its live tensor bytes counted by precise mode's storage counter (as trainer/tensor_memory.py's
CpuProbe counts a CPU run), and the DynamicCache generate returns."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from planner.calibration import CUDA_CONTEXT
from planner.catalog import resolve_model
from planner.errors import PlannerError
from planner.inference import inference_memory, kv_cache_bytes
from planner.options import TrainSetup
from planner.params import params

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# torch, transformers and peft are imported inside fixtures and tests, never at collection


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The make-demo model folder (a 3.5M-parameter Llama, fp32 safetensors), torch on one thread."""
    import torch

    from trainer.demo import make_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("inference") / "demo"
    make_demo(out)
    yield out / "model"
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fp32_model(demo: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(demo, dtype=torch.float32).eval()


def generate(model: Any, prompt: int, new: int, batch: int = 1, **kwargs: Any) -> Any:
    """Greedy generation of exactly ``new`` tokens (no EOS stop) from a fixed random prompt."""
    import torch

    ids = torch.randint(3, 600, (batch, prompt), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as trainer/chat.py generates
        return model.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None, **kwargs)


def measured_peak(model: Any, prompt: int, new: int, batch: int = 1) -> tuple[int, int]:
    """(weights' bytes, peak live tensor bytes) of one generate call."""
    from planner.simulate.meta import live_bytes_class

    counter = live_bytes_class()(gpu_kernels=False)
    for t in [*model.parameters(), *model.buffers()]:
        counter.track(t)
    weights = counter.current
    counter.reset_peak()
    with counter:
        sequences = generate(model, prompt, new, batch)
    assert tuple(sequences.shape) == (batch, prompt + new)
    return weights, counter.peak


def check(model: Any, folder: Path, prompt: int, new: int, batch: int = 1, dtype_bytes: int = 4,
          adapter_params: int = 0) -> None:
    weights, peak = measured_peak(model, prompt, new, batch)
    est = inference_memory(resolve_model(str(folder)), quant=None, dtype_bytes=dtype_bytes, prompt_tokens=prompt,
                           new_tokens=new, batch=batch, adapter_params=adapter_params, device="cpu")
    assert est.peak_allocated_bytes == pytest.approx(peak, rel=0.10)
    # the weights are most of the tiny model's peak: the terms above them must hold on their own
    # (measured: within 0.1%, the rest being a few hundred bytes of position ids and scalars)
    above = est.peak_allocated_bytes - est.weights - est.adapters
    assert above == pytest.approx(peak - weights, rel=0.01), est


@pytest.mark.parametrize(("prompt", "new", "batch", "phase"), [
    (16, 16, 1, "prefill"), (64, 64, 1, "prefill"), (200, 50, 1, "prefill"), (16, 16, 4, "prefill"),
    (4, 300, 1, "decode"),  # a short prompt, a long answer: the cache's growth is the peak
])
def test_peak_matches_generate_on_the_cpu(demo, fp32_model, prompt, new, batch, phase):
    check(fp32_model, demo, prompt, new, batch)
    est = inference_memory(resolve_model(str(demo)), quant=None, dtype_bytes=4, prompt_tokens=prompt,
                           new_tokens=new, batch=batch, device="cpu")
    assert est.peak_phase == phase


def test_peak_matches_in_bf16(demo):
    """16-bit compute: every activation, RoPE's cos/sin and the cache at 2 bytes; fp32 logits copies."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo, dtype=torch.bfloat16).eval()
    check(model, demo, 200, 50, dtype_bytes=2)
    check(model, demo, 4, 300, dtype_bytes=2)


def test_peak_matches_with_a_narrow_mlp(demo, tmp_path):
    """An MLP narrower than attention: the peak moves to the query's rotary embedding."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(demo)
    config.intermediate_size = 64
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path)
    check(model, tmp_path, 200, 16)


def test_peak_matches_with_an_unmerged_lora_adapter(demo):
    """peft's branch on a 16-bit base: fp32 adapters, the input cast to fp32, an fp32 sum."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(demo, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, target_modules="all-linear")).eval()
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    assert {p.dtype for p in lora} == {torch.float32}  # peft's autocast_adapter_dtype
    check(model, demo, 200, 16, dtype_bytes=2, adapter_params=sum(p.numel() for p in lora))


@pytest.mark.parametrize(("prompt", "new", "batch"), [(16, 16, 1), (200, 50, 2)])
def test_kv_cache_is_the_cache_generate_returns(demo, fp32_model, prompt, new, batch):
    out = generate(fp32_model, prompt, new, batch, return_dict_in_generate=True)
    cache = out.cache  # a DynamicCache: one DynamicLayer of keys and values per decoder layer
    returned = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    arch = resolve_model(str(demo)).arch
    est = inference_memory(resolve_model(str(demo)), quant=None, dtype_bytes=4, prompt_tokens=prompt,
                           new_tokens=new, batch=batch, device="cpu")
    # generate never feeds back the last token it picks, so its cache holds prompt + new - 1
    # positions; the estimate counts the full prompt + new (the next turn caches it)
    assert cache.get_seq_length() == prompt + new - 1
    assert est.kv_cache - returned == kv_cache_bytes(arch, 1, batch, 4)


def test_llama_3_1_8b_kv_cache_in_bf16_on_cuda():
    model = resolve_model("meta-llama/Llama-3.1-8B")
    est = inference_memory(model, quant=None, dtype_bytes=2, prompt_tokens=4096, new_tokens=512)
    assert est.kv_cache == 2 * 32 * 8 * 128 * 4608 * 2  # K and V x layers x kv heads x head dim x tokens x bf16
    assert est.weights == model.total_params * 2 and est.quant_state == 0 and est.adapters == 0
    assert est.cuda_context == CUDA_CONTEXT and est.peak_phase == "prefill"
    assert est.peak_allocated_bytes == (est.weights + est.kv_cache + est.transient + est.workspace)
    assert est.device_used_bytes == est.peak_allocated_bytes + est.allocator_slack + est.cuda_context
    # prefill's MLP moment over 4096 tokens (4 x hidden + 3 x ffn + cos/sin, and the int64 ids),
    # less the 512 new tokens' cache, which does not exist yet
    per_token = (4 * 4096 + 3 * 14336 + 2 * 128) * 2 + 16
    assert est.transient == 4096 * per_token - 512 * (2 * 32 * 8 * 128 * 2)


def test_a_4bit_base_shares_the_training_estimators_quant_state():
    model = resolve_model("meta-llama/Llama-3.1-8B")
    est = inference_memory(model, quant="nf4", dtype_bytes=2, prompt_tokens=128, new_tokens=128,
                           adapter_params=41_943_040)
    trained = params(model.arch, TrainSetup(method="qlora", quant="nf4"), model.total_params)
    assert est.quant_state == trained.quant_state > 0
    quantized = model.arch.linear_weight_params
    assert est.weights == quantized // 2 + (model.total_params - quantized) * 2
    assert est.adapters == 41_943_040 * 4


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"quant": "nf3"}, "quant"), ({"dtype_bytes": 3}, "dtype_bytes"), ({"prompt_tokens": 0}, "prompt_tokens"),
    ({"new_tokens": 0}, "new_tokens"), ({"batch": 0}, "batch"), ({"device": "tpu"}, "device"),
    ({"adapter_params": -1}, "adapter_params"), ({"adapter_bytes": 1}, "adapter_bytes"),
])
def test_bad_input_names_its_field(kwargs, field):
    args = dict(quant=None, dtype_bytes=2, prompt_tokens=16, new_tokens=16) | kwargs
    with pytest.raises(PlannerError) as err:
        inference_memory(resolve_model("meta-llama/Llama-3.1-8B"), **args)
    assert err.value.field == field
