"""planner.simulate.moe_layout: experts rebuilt per expert load, quantize, adapt and compute like the stock model."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import PlannerError
from trainer.demo import ARCHS, model_config

# torch is imported inside the tests: collecting this module must not load it (the GUI tests
# check that the app process never does)
MOE = ARCHS[1:]
VOCAB = 128


def _save(arch: str, out: Path) -> Path:
    """A random-weight checkpoint as the Hub stores them (save_pretrained: one tensor per expert)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(model_config(arch, VOCAB)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("moe")
    return {arch: _save(arch, root / arch) for arch in MOE}


def _stock(path: Path, **kwargs):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, **{"dtype": torch.float32, **kwargs})


def _per_expert(path: Path, **kwargs):
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from planner.simulate.moe_layout import per_expert_class, per_expert_loading

    config = AutoConfig.from_pretrained(path)
    with per_expert_loading(config.model_type):
        cls = per_expert_class(MODEL_FOR_CAUSAL_LM_MAPPING[type(config)])
        return cls.from_pretrained(path, **{"dtype": torch.float32, **kwargs})


def _nf4():
    import torch
    from transformers import BitsAndBytesConfig

    return dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.float32),
                device_map={"": "cpu"})


def _ids():
    import torch

    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))


def test_expert_names_come_from_transformers_conversion():
    from planner.simulate.moe_layout import ExpertNames, expert_names

    assert expert_names("mixtral") == ExpertNames("w1", "w3", "w2")
    for arch in ("qwen2_moe", "qwen3_moe", "olmoe"):
        assert expert_names(arch) == ExpertNames("gate_proj", "up_proj", "down_proj")
def test_the_planner_names_experts_as_the_trainer_builds_them():
    """The catalog (torch-free) states the names; transformers' conversion is the authority."""
    from planner.catalog.hf_config import EXPERT_NAMES, GATED_NAMES
    from planner.simulate.moe_layout import SUPPORTED, expert_names

    for model_type in SUPPORTED:
        names = expert_names(model_type)
        assert EXPERT_NAMES.get(model_type, GATED_NAMES) == (names.gate, names.up, names.down)


def test_stock_stack_still_needs_the_workaround(checkpoints):
    """Pins the behaviours planner/simulate/moe_layout.py works around (transformers 5.24, peft 0.21.2,
    bitsandbytes 0.50.2). When this fails, the library changed: recheck the module's docstring."""
    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    stock = _stock(checkpoints["mixtral"], **_nf4())
    experts = stock.model.layers[0].mlp.experts
    assert experts.gate_up_proj.ndim == 3 and experts.gate_up_proj.dtype == torch.float32, "experts fused, unquantized"
    with pytest.raises(ValueError, match="lora_dropout"):
        get_peft_model(_stock(checkpoints["mixtral"]), LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
    assert transformers.__version__.startswith("5."), transformers.__version__
    assert peft.__version__, peft.__version__


@pytest.mark.parametrize("arch", MOE)
def test_per_expert_logits_equal_the_stock_model(checkpoints, arch):
    import torch
    mine = _per_expert(checkpoints[arch], dtype=torch.float64)
    mlp = mine.model.layers[0].mlp
    assert type(mlp.experts).__name__ == "ExpertList" and len(mlp.experts) == 4
    assert isinstance(mlp.experts[0].get_submodule("w2" if arch == "mixtral" else "down_proj"), torch.nn.Linear)
    ids = _ids()
    with torch.no_grad():
        # transformers' eager loop, expert by expert: the same arithmetic, bit for bit in fp64 (in
        # fp32 one fused gate|up matmul and two separate ones may round 1 ulp apart)
        assert torch.equal(mine(ids).logits, _stock(checkpoints[arch], dtype=torch.float64,
                                                    experts_implementation="eager")(ids).logits)
        got = mine.float()(ids).logits
        fused = _stock(checkpoints[arch])(ids).logits  # the default grouped_mm kernel
    torch.testing.assert_close(got, fused, rtol=0, atol=1e-5)


def _dequantized(module):
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()


@pytest.mark.parametrize("arch", MOE)
def test_4bit_experts_equal_the_stock_model_with_dequantized_weights(checkpoints, arch):
    import bitsandbytes as bnb
    import torch

    from planner.simulate.moe_layout import expert_names

    quantized = _per_expert(checkpoints[arch], **_nf4())
    names = expert_names(quantized.config.model_type)
    layer = quantized.model.layers[0].mlp
    projections = (names.gate, names.up, names.down)
    assert all(isinstance(getattr(e, n), bnb.nn.Linear4bit) for e in layer.experts for n in projections)
    assert layer.gate.weight.dtype == torch.float32, "the router stays unquantized"

    # the stock fused model holding exactly the weights the 4-bit model computes with
    stock = _stock(checkpoints[arch], experts_implementation="eager")
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and ".experts." not in name:
            stock.get_submodule(name).weight.data.copy_(_dequantized(module))
    for i, layer in enumerate(quantized.model.layers):
        fused = stock.model.layers[i].mlp.experts
        for e, expert in enumerate(layer.mlp.experts):
            gate, up, down = (_dequantized(getattr(expert, n)) for n in projections)
            fused.gate_up_proj.data[e] = torch.cat([gate, up])
            fused.down_proj.data[e] = down
    ids = _ids()
    # train mode: in eval mode bitsandbytes' CPU inference path repacks the weights and computes in bf16
    quantized.train(), stock.train()
    with torch.no_grad():
        got, want = quantized(ids).logits, stock(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_lora_wraps_each_4bit_expert_with_dropout(checkpoints):
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit
    from transformers import AutoConfig

    from planner.simulate.moe_layout import per_expert_loading

    path = checkpoints["mixtral"]
    with per_expert_loading(AutoConfig.from_pretrained(path).model_type):
        model = get_peft_model(_per_expert(path, **_nf4()),
                               LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
    experts = model.base_model.model.model.layers[0].mlp.experts
    assert all(isinstance(getattr(e, n), LoraLinear4bit) for e in experts for n in ("w1", "w2", "w3"))
    assert not model.peft_config["default"].target_parameters
    assert "lora" not in type(model.base_model.model.model.layers[0].mlp.gate).__module__  # the router


def test_the_libraries_are_put_back_after_the_block(checkpoints):
    import peft.utils.transformers_weight_conversion as conversion
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    before = repr(get_checkpoint_conversion_mapping("mixtral"))
    convert = conversion.convert_peft_config_for_transformers
    _per_expert(checkpoints["mixtral"])
    assert repr(get_checkpoint_conversion_mapping("mixtral")) == before
    assert conversion.convert_peft_config_for_transformers is convert
    assert _stock(checkpoints["mixtral"]).model.layers[0].mlp.experts.gate_up_proj.ndim == 3


def test_unsupported_moe_model_types_are_refused_in_one_line():
    from planner.simulate.moe_layout import needs_split

    assert needs_split("mixtral") and not needs_split("llama")
    with pytest.raises(PlannerError, match="deepseek_v3.*supported: mixtral"):
        needs_split("deepseek_v3")


def test_meta_tensors_route_uniformly():
    import torch
    from transformers import AutoModelForCausalLM

    from planner.simulate.moe_layout import split_experts

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config("mixtral", VOCAB))
    assert split_experts(model) == 4
    experts = model.model.layers[0].mlp.experts
    index = torch.empty(10, 2, dtype=torch.long, device="meta")
    shares = [len(token) for _, _, token in experts._routes(index)]
    assert shares == [5, 5, 5, 5]
    out = model(input_ids=torch.zeros(2, 5, dtype=torch.long, device="meta")).logits
    assert out.shape == (2, 5, VOCAB) and out.device.type == "meta"
