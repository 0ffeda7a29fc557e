"""Every catalog entry: exact parameter count from its architecture, against cited totals."""

import json

import pytest

from planner.catalog import catalog, resolve_model
from planner.catalog.hf_config import architecture_from_config
from planner.errors import PlannerError

ENTRIES = sorted(catalog().values(), key=lambda e: e.id)


def test_catalog_is_broad():
    ids = set(catalog())
    assert len(ids) >= 35
    # every column of the classic table is present
    for needed in ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "huggyllama/llama-30b",
                   "meta-llama/Llama-2-70b-hf", "Qwen/Qwen1.5-110B", "mistralai/Mixtral-8x7B-v0.1",
                   "mistralai/Mixtral-8x22B-v0.1"):
        assert needed in ids
    sizes = [resolve_model(i).total_params for i in ids]
    assert min(sizes) < 0.6e9 and max(sizes) > 400e9
    assert sum(resolve_model(i).arch.is_moe for i in ids) >= 3


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
def test_entry_parameter_count(entry):
    assert entry.source, "every entry cites where its facts come from"
    total = resolve_model(entry.id).total_params
    # reference_params: the same config fields counted independently, rounded to 1M
    assert abs(total - entry.reference_params) <= 0.6e6 + 1e-4 * entry.reference_params
    if entry.published_params:
        assert abs(total - entry.published_params) / entry.published_params < 0.005


def test_llama2_7b_exact():
    assert resolve_model("meta-llama/Llama-2-7b-hf").total_params == 6_738_415_616


def test_lookup_is_case_and_org_insensitive():
    assert resolve_model("llama-2-7b-hf").name == "meta-llama/Llama-2-7b-hf"
    assert resolve_model("MISTRALAI/MIXTRAL-8X7B-V0.1").name == "mistralai/Mixtral-8x7B-v0.1"


def test_unknown_id_suggests_close_names():
    with pytest.raises(PlannerError, match="did you mean .*Mixtral-8x7B"):
        resolve_model("mixtral-8x7b")


def test_fused_projections_counted_once():
    phi3 = resolve_model("microsoft/Phi-3-mini-4k-instruct").arch
    assert {"qkv_proj", "gate_up_proj"} <= phi3.linear_names()
    qwen1 = resolve_model("Qwen/Qwen-7B").arch
    assert "c_attn" in qwen1.linear_names()


def test_unknown_architecture_falls_back_with_assumption(tmp_path):
    cfg = {"model_type": "brand_new", "hidden_size": 512, "num_hidden_layers": 4,
           "num_attention_heads": 8, "intermediate_size": 1024, "vocab_size": 1000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = resolve_model(str(path))
    assert any("unknown architecture 'brand_new'" in a for a in spec.assumptions)
    per_layer = 4 * 512 * 512 + 3 * 512 * 1024 + 2 * 512
    assert spec.total_params == 2 * 1000 * 512 + 4 * per_layer + 512


def test_multimodal_wrapper_plans_the_text_model():
    text = catalog()["meta-llama/Llama-3.1-8B"].config
    arch = architecture_from_config({"model_type": "llava", "text_config": text})
    assert arch.total_params == resolve_model("meta-llama/Llama-3.1-8B").total_params


@pytest.mark.parametrize("bad", [{"hidden_size": -1}, {"hidden_size": "4096"}, {"vocab_size": None}])
def test_bad_config_fields_are_one_line_errors(bad):
    cfg = {**catalog()["meta-llama/Llama-2-7b-hf"].config, **bad}
    with pytest.raises(PlannerError) as err:
        architecture_from_config(cfg)
    assert "\n" not in str(err.value)
