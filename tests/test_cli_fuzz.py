"""Property-based fuzzing of ``python -m planner`` (in-process): whatever the options and whatever
the model's config.json hold, the CLI exits 0 or 2, an error is exactly one ``error:`` line on
stderr, and every ``--json`` output is strict JSON (no NaN, no Infinity).

Kept fast and reproducible for CI: derandomized, 800 examples in all. ``simulate`` is
left out (it imports torch); its LoRA-rank bound is tested in test_cli_bad_input.py.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from planner.catalog import catalog
from planner.cli import main
from planner.options import (
    ADAPTER_DTYPES,
    ATTENTIONS,
    METHODS,
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    SHARDINGS,
)


def fuzz(examples: int):
    """Reproducible (derandomized, no example database) and bounded: the three tests together run
    in 7-12 s here, well under a minute on a loaded 2-core CI machine. Run with
    ``--hypothesis-show-statistics`` to see how many examples got past validation."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


MODEL_IDS = ["meta-llama/Llama-2-7b-hf", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen3-30B-A3B",
             "deepseek-ai/DeepSeek-V2-Lite", "tiiuae/falcon-7b", "microsoft/Phi-3-mini-4k-instruct"]
BASE_CONFIGS = [catalog()[m].config for m in MODEL_IDS]
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
            "deepseek_v2", "deepseek_v3", "phi3", "phi", "stablelm", "falcon", "qwen", "brand_new"]
CONFIG_FIELDS = [
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
    "intermediate_size", "max_position_embeddings", "tie_word_embeddings", "attention_bias", "mlp_bias",
    "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size", "mlp_only_layers",
    "decoder_sparse_step", "shared_expert_intermediate_size", "first_k_dense_replace", "n_routed_experts",
    "n_shared_experts", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank", "q_lora_rank",
    "final_logit_softcapping", "new_decoder_architecture", "multi_query", "parallel_attn", "hidden_act",
    "model_type", "text_config", "n_embd", "num_ln_in_parallel_attn",
]

# --- strategies ----------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # argv holds no lone surrogates
HUGE_INTS = st.integers(min_value=10**15, max_value=10**400) | st.integers(min_value=-10**400, max_value=-1)


def mostly(valid: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four: enough examples get past validation to reach the estimator."""
    return st.integers(0, 3).flatmap(lambda i: wild if i == 0 else valid)


WILD_NUMBER = st.one_of(
    st.integers(-5, 70_000).map(str),
    HUGE_INTS.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e300", "1e309", "-0", "0.5", "1_000", " 8 ", "", "0x10", "1e6",
                     "16777216", "16777217", "65536", "1048576", "999999.99"]),
    TEXT,
)
SMALL = st.integers(1, 64).map(str)
VALID_NUMBERS = {  # per option, values it accepts
    "--batch-size": SMALL, "--seq-len": st.integers(1, 8192).map(str), "--lora-r": SMALL, "--lora-alpha": SMALL,
    "--num-gpus": st.integers(1, 8).map(str), "--dataset-tokens": st.integers(1, 10**12).map(str),
    "--epochs": st.floats(0.01, 100).map(repr), "--lora-dropout": st.floats(0, 0.9).map(repr),
    "--gpu-memory-gib": st.floats(1, 2048).map(repr), "--price-per-hour": st.floats(0, 100).map(repr),
    "--electricity-price": st.floats(0, 1).map(repr),
}
COMMON_NUMBERS = ["--batch-size", "--seq-len", "--lora-r", "--lora-alpha", "--num-gpus", "--dataset-tokens",
                  "--epochs", "--lora-dropout"]
CHOICES = {"--method": METHODS, "--quant": ("nf4", "fp4", "int8", "2bit"), "--precision": PRECISIONS,
           "--adapter-dtype": ADAPTER_DTYPES, "--optimizer": OPTIMIZERS, "--attention": ATTENTIONS,
           "--sharding": SHARDINGS, "--offload": OFFLOADS, "--lora-targets": ("all-linear", "q_proj,v_proj", "w1"),
           "--modules-to-save": ("embed_tokens", "lm_head", "mlp")}
FLAGS = ["--grad-checkpointing", "--no-grad-checkpointing", "--double-quant", "--no-double-quant"]
TABLE_FIXES = ("--method", "--quant", "--precision")
"""Options `table` does not take (its rows set them): left out of most of its examples."""

MODEL_NAMES = mostly(st.sampled_from(MODEL_IDS), st.one_of(
    st.sampled_from(["llama-2-7b", "mixtral", "", " ", "~", "/", ".", "..", "~/", "/dev/null", "/proc/self",
                     "config.json", "\\x"]),
    TEXT,
    st.integers(200, 5000).map(lambda n: "m" * n),
    st.tuples(st.sampled_from(["/", "~", "./", "org/", "~nobody_xyz/"]), st.integers(250, 600),
              st.sampled_from(["", "/config.json", ".json"])).map(lambda t: t[0] + "a" * t[1] + t[2]),
))


def numbers(names: list[str]) -> st.SearchStrategy[list[str]]:
    """Up to four ``--option=value`` arguments, each value mostly in range, else anything."""
    pair = st.sampled_from(names).flatmap(
        lambda o: mostly(VALID_NUMBERS[o], WILD_NUMBER).map(lambda v: f"{o}={v}"))
    return st.lists(pair, max_size=4)


CHOSEN = st.sampled_from(sorted(CHOICES)).flatmap(
    lambda o: mostly(st.sampled_from(CHOICES[o]), TEXT).map(lambda v: f"{o}={v}"))
COMMON = st.tuples(numbers(COMMON_NUMBERS), st.lists(CHOSEN, max_size=3), st.lists(st.sampled_from(FLAGS), max_size=2),
                   ).map(lambda t: t[0] + t[1] + t[2])


@st.composite
def gpu_choice(draw) -> list[str]:
    kind = draw(st.sampled_from(["name"] * 3 + ["memory"] * 3 + ["both", "none", "auto"]))
    out = []
    if kind in ("name", "both"):
        out.append("--gpu=" + draw(mostly(st.sampled_from(["RTX 4090", "4090", "A100 80GB SXM", "h100", "L4", "T4"]),
                                          TEXT)))
    if kind in ("memory", "both"):
        out.append("--gpu-memory-gib=" + draw(mostly(VALID_NUMBERS["--gpu-memory-gib"], WILD_NUMBER)))
    if kind == "auto":
        out.append("--gpu=auto")
    out += ["--max-quality"] if draw(st.booleans()) else []
    return out + draw(numbers(["--price-per-hour", "--electricity-price"]))


# JSON values of every type, including nesting (bounded: deep nesting has its own cases below)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 100) | HUGE_INTS | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELD_VALUES = st.one_of(
    st.integers(-2, 64),
    st.integers(0, 8),
    st.integers(1, 2**21),
    st.lists(st.integers(-2, 64), max_size=6),
    st.sampled_from(["false", "true", "4096", "llama", "silu", "gelu"]),
    st.sampled_from(FAMILIES),
    JSON_VALUES,
)


@st.composite
def config_text(draw) -> str:
    """A config.json's text: a catalog config with fields changed, added or removed, or garbage."""
    kind = draw(st.sampled_from(["mutated"] * 8 + ["random", "deep", "bad"]))
    if kind == "deep":
        return draw(st.sampled_from(["[", '{"a":', '{"hidden_size": ['])) * draw(st.integers(500, 50_000))
    if kind == "bad":
        junk = ["", "{", "[1]", "null", '"x"', "NaN", '{"hidden_size": ' + "9" * 5000 + "}"]
        return draw(st.sampled_from(junk) | TEXT)
    if kind == "random":
        return json.dumps(draw(st.dictionaries(st.sampled_from(CONFIG_FIELDS), FIELD_VALUES, max_size=12)))
    cfg = dict(draw(st.sampled_from(BASE_CONFIGS)))
    for key in draw(st.lists(st.sampled_from(CONFIG_FIELDS), max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            cfg.pop(key, None)
        else:
            cfg[key] = draw(FIELD_VALUES)
    return json.dumps(cfg)


# --- the properties ------------------------------------------------------------------------------

def refuse_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own exits (none expected, but 0/2 would be fine)
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str]) -> None:
    code, out, err = run_cli(argv)
    event(f"{argv[0]} exit {code}")  # --hypothesis-show-statistics: how many examples got past validation
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert out == ""
        return
    assert all(line.startswith("warning: ") for line in err.splitlines()), (argv, err)
    if "--json" in argv:
        json.loads(out, parse_constant=refuse_constant)


@pytest.fixture(autouse=True, scope="module")
def no_user_settings():
    """A settings file that does not exist: the fuzz must not read (or warn about) the user's."""
    old = os.environ.get("FINETUNE_PLANNER_SETTINGS")
    os.environ["FINETUNE_PLANNER_SETTINGS"] = str(Path(tempfile.gettempdir()) / "no-such-dir-xyz" / "settings.json")
    yield
    if old is None:
        del os.environ["FINETUNE_PLANNER_SETTINGS"]
    else:
        os.environ["FINETUNE_PLANNER_SETTINGS"] = old


@fuzz(300)
@given(command=st.sampled_from(["estimate"] * 3 + ["recommend"] * 3 + ["table", "gpus"]), model=MODEL_NAMES,
       options=COMMON,
       gpu=gpu_choice(), as_json=st.booleans())
def test_cli_options_never_crash(command, model, options, gpu, as_json):
    argv = [command]
    if command in ("estimate", "recommend"):
        argv.append(f"--model={model}")
    if command == "recommend":
        argv += gpu
    if command == "table" and options and options[0] != "--method=full":  # now and then, the usage error
        options = [o for o in options if not o.startswith(TABLE_FIXES)]
    if command != "gpus":
        argv += options
    check(argv + (["--json"] if as_json else []))


@fuzz(300)
@given(text=config_text(), as_folder=st.booleans(), command=st.sampled_from(["estimate", "recommend"]),
       options=st.lists(CHOSEN | numbers(COMMON_NUMBERS).map(tuple), max_size=2), as_json=st.booleans())
def test_model_configs_never_crash(text, as_folder, command, options, as_json):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        argv = [command, f"--model={tmp if as_folder else path}"]
        if command == "recommend":
            argv.append("--gpu-memory-gib=80")
        flat = [x for o in options for x in ([o] if isinstance(o, str) else o)]
        check(argv + flat + (["--json"] if as_json else []))


@fuzz(200)
@given(text=config_text())
def test_valid_configs_estimate_non_negative_bytes(text):
    """A config the planner accepts never yields negative parameter or byte counts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, out, _ = run_cli(["estimate", f"--model={path}", "--method=full", "--json"])
        if code == 0:
            doc = json.loads(out, parse_constant=refuse_constant)
            assert doc["params"]["total"] > 0 and doc["params"]["trainable"] > 0
            assert all(value >= 0 for value in doc["bytes"].values()), doc["bytes"]
