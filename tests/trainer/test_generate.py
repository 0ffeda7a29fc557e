"""`python -m trainer generate`: the Try page's subprocess. A real demo run is loaded (its 4-bit
base and its adapter), answers stream token by token, the tuned model beats its base on held-out
examples, stop works mid-generation, bad input is one clear line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_inprocess, write_config

ASK = [{"role": "user", "content": "reverse: rose lion bear"}]


@pytest.fixture(scope="module")
def run_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("generate") / "run"
    code, events = run_inprocess(write_config(demo_dir, out, max_steps=80, val_split=0.1, save_steps=40))
    assert code == 0, events[-1]
    return out


def session(*requests: dict | str, args: tuple[str, ...] = ()) -> tuple[int, list[dict]]:
    """A whole generate session in this process: the requests, then the end of stdin."""
    from trainer.generate import main

    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)
    out = io.StringIO()
    parsed = {"run": None, "adapters": [], "model": None}
    it = iter(args)
    for flag in it:
        key = flag.lstrip("-")
        if key == "adapter":
            parsed["adapters"].append(next(it))
        else:
            parsed[key] = next(it)
    code = main(parsed["run"], parsed["adapters"], parsed["model"], "cpu", stdin=io.StringIO(lines), out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def of(events: list[dict], kind: str, rid: str | None = None) -> list[dict]:
    return [e for e in events if e["event"] == kind and (rid is None or e.get("id") == rid)]


def test_the_tuned_model_does_the_demo_task_better_than_its_base_on_held_out_examples(run_dir):
    code, events = session({"op": "score", "id": "tuned"}, {"op": "score", "id": "base", "adapter": "base"},
                           args=("--run", str(run_dir)))
    assert code == 0
    tuned, base = of(events, "score", "tuned")[0], of(events, "score", "base")[0]
    assert tuned["split"] == base["split"] == "validation" and tuned["examples"] == base["examples"] > 0
    assert tuned["adapter"] == "tuned" and base["adapter"] == "base"
    assert tuned["loss"] < base["loss"] - 1.0
    assert tuned["token_accuracy"] > base["token_accuracy"] + 0.1


def test_an_answer_streams_token_by_token_in_the_runs_chat_layout(run_dir):
    code, events = session({"op": "generate", "id": "1", "messages": ASK, "max_new_tokens": 12, "temperature": 0,
                            "measure": True}, args=("--run", str(run_dir)))
    ready = of(events, "ready")[0]
    assert ready["adapters"] == "base,tuned" and ready["device"] == "cpu" and ready["chat"] == "template"
    assert ready["weights_bytes"] > 0
    tokens, done = of(events, "token", "1"), of(events, "done", "1")[0]
    assert len(tokens) >= 2 and "".join(t["text"] for t in tokens).strip()
    assert done["status"] == "completed" and 2 <= done["new_tokens"] <= 12
    assert done["ttft_s"] > 0 and done["tokens_per_s"] > 0 and done["prompt_tokens"] > len(ASK[0]["content"]) // 8
    # measured on the CPU when asked: the weights and what generating added
    assert done["peak_alloc_bytes"] > ready["weights_bytes"]


def test_greedy_answers_of_base_and_tuned_differ_on_one_loaded_model(run_dir):
    ask = {"op": "generate", "messages": ASK, "max_new_tokens": 8, "temperature": 0}
    code, events = session({**ask, "id": "t"}, {**ask, "id": "b", "adapter": "base"}, {**ask, "id": "t2"},
                           args=("--run", str(run_dir)))
    text = {rid: "".join(t["text"] for t in of(events, "token", rid)) for rid in ("t", "b", "t2")}
    assert text["t"] != text["b"]
    assert text["t"] == text["t2"]  # disabling the adapter for the base left it intact


def test_two_adapters_of_one_base_answer_without_reloading_it(run_dir):
    checkpoint = next((run_dir / "checkpoints").glob("checkpoint-40"))
    ask = {"op": "generate", "messages": ASK, "max_new_tokens": 6, "temperature": 0}
    code, events = session({**ask, "id": "early", "adapter": "early"}, {**ask, "id": "final"},
                           args=("--run", str(run_dir), "--adapter", f"early={checkpoint}"))
    assert code == 0 and of(events, "ready")[0]["adapters"] == "base,tuned,early"
    assert of(events, "done", "early") and of(events, "done", "final")


def test_examples_are_the_runs_held_out_split_with_their_reference_answers(run_dir, demo_dir):
    code, events = session({"op": "examples", "id": "e", "limit": 5}, args=("--run", str(run_dir)))
    examples = of(events, "example", "e")
    assert [e["index"] for e in examples] == list(range(5)) and {e["split"] for e in examples} == {"validation"}
    rows = [json.loads(line) for line in (demo_dir / "data.jsonl").read_text().splitlines()]
    pairs = {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows}
    for e in examples:
        (message,) = json.loads(e["messages_json"])
        assert (message["content"], e["reference"]) in pairs


def test_stop_ends_a_generation_mid_way_and_the_session_goes_on(run_dir):
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "generate", "--run", str(run_dir), "--device", "cpu"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdin and proc.stdout
    endless = {"op": "generate", "id": "long", "adapter": "base", "prompt": "a", "max_new_tokens": 100_000,
               "temperature": 1.0}
    proc.stdin.write(json.dumps(endless) + "\n")
    proc.stdin.flush()
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "token":
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            break
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "done":
            break
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "stopped" and done["new_tokens"] < 100_000
    proc.stdin.write(json.dumps({"op": "generate", "id": "next", "messages": ASK, "max_new_tokens": 3}) + "\nquit\n")
    proc.stdin.flush()
    rest = [json.loads(line) for line in proc.stdout]
    assert of(rest, "done", "next")[0]["status"] == "completed"
    assert proc.wait(timeout=60) == 0
    assert proc.stderr and proc.stderr.read() == ""  # the libraries' notes stay out of the user's way


def test_a_bad_request_is_one_error_event_and_the_session_goes_on(run_dir):
    code, events = session("not json", {"op": "generate", "id": "x", "adapter": "nope", "messages": ASK},
                           {"op": "generate", "id": "y", "messages": ASK, "temperature": "hot"},
                           {"op": "generate", "id": "z", "messages": ASK, "max_new_tokens": 2},
                           args=("--run", str(run_dir)))
    errors = of(events, "error")
    assert [e["id"] for e in errors] == ["", "x", "y"] and all(e["type"] == "config" for e in errors)
    assert "adapter 'nope' is not loaded; one of: base, tuned" in errors[1]["message"]
    assert "temperature" in errors[2]["message"]
    assert code == 0 and of(events, "done", "z")


@pytest.mark.parametrize("args, message", [
    (("--run", "/no/such/run"), "/no/such/run is not a run directory"),
    ((), "give --run RUN_DIR, --model DIR, or --adapter DIR"),
    (("--adapter", "/no/such/adapter"), "/no/such/adapter is not a peft adapter folder"),
])
def test_what_cannot_be_opened_is_one_line_and_exit_2(args, message, capsys):
    code, events = session(args=args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not events
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_merged_export_answers_as_the_adapter_on_its_base(run_dir, tmp_path):
    from trainer.export import main as export_main

    assert export_main(str(run_dir), str(tmp_path / "merged"), merge=True) == 0
    ask = {"op": "generate", "id": "m", "messages": ASK, "max_new_tokens": 6, "temperature": 0}
    _, merged = session(ask, args=("--model", str(tmp_path / "merged")))
    _, tuned = session(ask, args=("--run", str(run_dir)))
    assert of(merged, "ready")[0]["adapters"] == "model"
    answer = {name: "".join(t["text"] for t in of(events, "token", "m")) for name, events in
              (("merged", merged), ("tuned", tuned))}
    assert answer["merged"] == answer["tuned"] and answer["merged"].strip()


@pytest.fixture(scope="module", params=["prompt", "prefix"])
def virtual_run(request, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A prompt- or prefix-tuning run of the demo (fp32 base): its virtual tokens change the greedy answer."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp(request.param) / "run"
    code, events = run_inprocess(write_config(demo_dir, out, method="lora", peft=request.param, learning_rate=3e-2,
                                              modules_to_save=[], grad_checkpointing=False, max_steps=30,
                                              save_steps=0))
    assert code == 0, events[-1]
    return request.param, out


def _greedy(model, ids, new: int, eos: int) -> list[int]:
    """Greedy decoding the slow, sure way: the whole sequence through the forward at every token,
    no cache; EOS held off (the request's ``min_new_tokens``), so every answer is ``new`` long."""
    import torch

    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(new):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
            logits[eos] = float("-inf")
            tokens.append(int(logits.argmax()))
            ids = torch.cat([ids, torch.tensor([tokens[-1:]])], dim=1)
    return tokens


def test_prompt_and_prefix_tuning_answer_as_their_forward_and_the_base_as_the_base(virtual_run, demo_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import prompt_text

    peft, run = virtual_run
    new = 10
    # the demo's tuned answer is EOS at once: holding it off makes every later token count
    ask = {"op": "generate", "messages": ASK, "max_new_tokens": new, "min_new_tokens": new, "temperature": 0}
    code, events = session({**ask, "id": "t"}, {**ask, "id": "b", "adapter": "base"}, {**ask, "id": "t2"},
                           args=("--run", str(run)))
    assert code == 0 and not of(events, "error")
    text = {rid: "".join(t["text"] for t in of(events, "token", rid)) for rid in ("t", "b", "t2")}
    count = {rid: of(events, "done", rid)[0]["new_tokens"] for rid in ("t", "b")}

    tok = AutoTokenizer.from_pretrained(demo_dir / "model")
    ids = tok(prompt_text(tok, ASK), return_tensors="pt", add_special_tokens=False).input_ids
    eos = tok.eos_token_id

    def base():
        return AutoModelForCausalLM.from_pretrained(demo_dir / "model", dtype=torch.float32).eval()

    tuned = _greedy(PeftModel.from_pretrained(base(), run / "adapter").eval(), ids, new, eos)
    plain = _greedy(base(), ids, new, eos)
    assert tuned != plain  # the virtual tokens change the answer: an ignored adapter would show
    assert text["t"] == tok.decode(tuned, skip_special_tokens=True) and count["t"] == len(tuned)
    assert text["b"] == tok.decode(plain, skip_special_tokens=True) and count["b"] == len(plain)
    assert text["t2"] == text["t"]  # answering as the base left the adapter as it was


def test_prompt_and_prefix_tuning_score_their_held_out_examples(virtual_run):
    code, events = session({"op": "score", "id": "tuned", "limit": 16},
                           {"op": "score", "id": "base", "adapter": "base", "limit": 16},
                           args=("--run", str(virtual_run[1])))
    assert code == 0 and not of(events, "error")
    tuned, base = of(events, "score", "tuned")[0], of(events, "score", "base")[0]
    assert tuned["tokens"] == base["tokens"] > 0
    assert tuned["loss"] < base["loss"] - 0.1
