"""Model-config validation (planner/catalog/config_fields.py): a config.json with a field of the
wrong type or outside the model is one error line naming the field and the file, never negative
parameter counts, a string read as true, or a traceback."""

import json

import pytest

from planner.catalog import catalog, resolve_model
from planner.catalog.hf_config import architecture_from_config
from planner.errors import PlannerError
from planner.memory import estimate
from planner.options import TrainSetup

LLAMA = catalog()["meta-llama/Llama-2-7b-hf"].config
QWEN3_MOE = catalog()["Qwen/Qwen3-30B-A3B"].config          # 48 layers, 128 experts, 8 per token
DEEPSEEK = catalog()["deepseek-ai/DeepSeek-V2-Lite"].config  # 27 layers, first_k_dense_replace 1
MIXTRAL = catalog()["mistralai/Mixtral-8x7B-v0.1"].config    # 8 experts, 2 per token


def write(tmp_path, cfg) -> str:
    path = tmp_path / "config.json"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(path)


def error_line(model: str) -> str:
    """resolve_model's PlannerError: the one line the CLI prints after "error: "."""
    with pytest.raises(PlannerError) as err:
        resolve_model(model)
    line = str(err.value)
    assert "\n" not in line
    return line


BAD = [
    (QWEN3_MOE, {"mlp_only_layers": [0, 48]}, "mlp_only_layers"),
    (QWEN3_MOE, {"mlp_only_layers": [-1]}, "mlp_only_layers"),
    (QWEN3_MOE, {"mlp_only_layers": [True]}, "mlp_only_layers"),
    (QWEN3_MOE, {"mlp_only_layers": list(range(100))}, "mlp_only_layers"),
    (QWEN3_MOE, {"decoder_sparse_step": 0}, "decoder_sparse_step"),
    (QWEN3_MOE, {"decoder_sparse_step": -2}, "decoder_sparse_step"),
    (QWEN3_MOE, {"num_experts_per_tok": 129}, "num_experts_per_tok"),
    (MIXTRAL, {"num_experts_per_tok": 9}, "num_experts_per_tok"),
    (DEEPSEEK, {"first_k_dense_replace": 28}, "first_k_dense_replace"),
    (DEEPSEEK, {"first_k_dense_replace": -1}, "first_k_dense_replace"),
    (DEEPSEEK, {"n_shared_experts": -2}, "n_shared_experts"),
    (LLAMA, {"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    (LLAMA, {"tie_word_embeddings": 0}, "tie_word_embeddings"),
    (LLAMA, {"attention_bias": "yes"}, "attention_bias"),
    (LLAMA, {"hidden_size": 4096.0}, "hidden_size"),
    (LLAMA, {"hidden_size": True}, "hidden_size"),
    (LLAMA, {"hidden_size": 10**400}, "hidden_size"),
    (LLAMA, {"hidden_size": 2**40}, "hidden_size"),
    (LLAMA, {"num_hidden_layers": 10**9}, "num_hidden_layers"),
    (LLAMA, {"num_hidden_layers": "32"}, "num_hidden_layers"),
    (LLAMA, {"intermediate_size": -11008}, "intermediate_size"),
    (LLAMA, {"vocab_size": 32000.5}, "vocab_size"),
    (LLAMA, {"vocab_size": [32000]}, "vocab_size"),
    (LLAMA, {"num_attention_heads": 0}, "num_attention_heads"),
    (LLAMA, {"num_attention_heads": 8192}, "num_attention_heads"),  # > hidden_size, no head_dim
    (LLAMA, {"num_key_value_heads": {"n": 8}}, "num_key_value_heads"),
    (LLAMA, {"head_dim": False}, "head_dim"),
    (LLAMA, {"max_position_embeddings": 4096.0}, "max_position_embeddings"),
    (LLAMA, {"model_type": ["llama"]}, "model_type"),
    (LLAMA, {"final_logit_softcapping": "30"}, "final_logit_softcapping"),
]


@pytest.mark.parametrize("base, fields, needle", BAD, ids=[f"{n}={f[n]!r}"[:40] for _, f, n in BAD])
def test_bad_field_is_one_line_naming_field_and_file(tmp_path, base, fields, needle):
    path = write(tmp_path, {**base, **fields})
    line = error_line(path)
    assert needle in line and path in line, line
    assert len(line) < 400, line


def test_a_400_digit_size_is_not_quoted_whole(tmp_path):
    line = error_line(write(tmp_path, {**LLAMA, "hidden_size": 10**400}))
    assert "401-digit number" in line  # 10**400


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, '{"hidden_size": ' + "9" * 5000 + "}"],
                         ids=["deep-list", "deep-object", "5000-digit-int"])
def test_unparseable_config_is_one_line(tmp_path, text):
    path = write(tmp_path, text)
    assert path in error_line(path)


def test_deeply_nested_config_in_a_folder(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000)
    assert "nested too deeply" in error_line(str(tmp_path))


def test_every_layer_listed_dense_is_a_dense_model(tmp_path):
    cfg = {**QWEN3_MOE, "mlp_only_layers": list(range(48))}
    arch = architecture_from_config(cfg)
    assert not arch.is_moe and arch.num_layers == 48
    assert all(b.count > 0 for b in arch.blocks)


def test_first_k_dense_replace_all_layers(tmp_path):
    arch = architecture_from_config({**DEEPSEEK, "first_k_dense_replace": 27})
    assert not arch.is_moe and arch.num_layers == 27


@pytest.mark.parametrize("base, fields", [
    (QWEN3_MOE, {"mlp_only_layers": [0, 47, 47]}),
    (QWEN3_MOE, {"decoder_sparse_step": 2}),
    (QWEN3_MOE, {"decoder_sparse_step": 1000}),
    (DEEPSEEK, {"first_k_dense_replace": 0}),
    (LLAMA, {"tie_word_embeddings": True, "attention_bias": None}),
])
def test_valid_moe_layouts_count_positive_parameters(tmp_path, base, fields):
    est = estimate(resolve_model(write(tmp_path, {**base, **fields})), TrainSetup())
    assert est.params_total > 0 and all(v >= 0 for v in est.to_json()["bytes"].values())
    arch = architecture_from_config({**base, **fields})
    assert all(b.count > 0 for b in arch.blocks) and arch.num_layers == base["num_hidden_layers"]


def test_string_false_is_not_read_as_true():
    with pytest.raises(PlannerError, match="'tie_word_embeddings' must be true or false"):
        architecture_from_config({**LLAMA, "tie_word_embeddings": "false"})
    assert architecture_from_config({**LLAMA, "tie_word_embeddings": False}).tie_word_embeddings is False


def test_catalog_entries_name_themselves_in_errors():
    with pytest.raises(PlannerError, match="^my source: 'vocab_size'"):
        architecture_from_config({**LLAMA, "vocab_size": "big"}, "my source")


def test_every_catalog_entry_passes_validation():
    for model_id in catalog():
        assert resolve_model(model_id).arch.total_params > 0
