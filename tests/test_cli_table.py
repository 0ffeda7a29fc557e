"""``python -m planner table``: the classic 7B..8x22B table, computed, with a row per adapter."""

from __future__ import annotations

from clitools import run_json, run_ok

TABLE_SIZES = ["7B", "13B", "30B", "70B", "110B", "8x7B", "8x22B"]
CLASSIC_ROWS = [("Full", "AMP"), ("Full", "16"), ("LoRA", "16"), ("QLoRA", "8"), ("QLoRA", "4"), ("QLoRA", "2")]
ADAPTER_ROWS = [("DoRA", "16"), ("AdaLoRA", "16"), ("IA3", "16"), ("Prompt", "16"), ("Prefix", "16")]


def test_table_json(capsys):
    data = run_json(capsys, "table")
    assert [c["size"] for c in data["columns"]] == TABLE_SIZES
    layouts = [c["moe_layout"] for c in data["columns"]]
    assert layouts[:5] == [None] * 5 and all("one nn.Linear per expert" in x for x in layouts[5:])
    assert [(r["method"], r["bits"]) for r in data["rows"]] == CLASSIC_ROWS + ADAPTER_ROWS
    for row in data["rows"]:
        for key in ("device_used_bytes", "peak_allocated_bytes"):
            assert len(row[key]) == 7
            assert all(type(v) is int and v > 0 for v in row[key])
        assert all(a <= d for a, d in zip(row["peak_allocated_bytes"], row["device_used_bytes"]))
    rows = {(r["method"], r["bits"]): r["device_used_bytes"] for r in data["rows"]}
    for col in range(7):
        used = [rows[key][col] for key in CLASSIC_ROWS]
        assert used == sorted(used, reverse=True) and len(set(used)) == 6, (TABLE_SIZES[col], used)
        lora = rows["LoRA", "16"][col]
        # on LoRA's base: more adapter state costs more; IA3's and prompt tuning's few parameters less;
        # prefix tuning trains without checkpointing
        assert rows["AdaLoRA", "16"][col] > lora and rows["DoRA", "16"][col] >= lora
        assert rows["IA3", "16"][col] < lora and rows["Prompt", "16"][col] < lora
        assert rows["Prefix", "16"][col] > lora
    # within each row, the 7B..70B dense Llamas grow with size
    for row in data["rows"]:
        dense = row["device_used_bytes"][:4]
        assert dense == sorted(dense)


def test_table_json_follows_options(capsys):
    small = run_json(capsys, "table", "--seq-len", "512")
    large = run_json(capsys, "table", "--seq-len", "4096", "--batch-size", "2")
    assert (small["seq_len"], large["seq_len"], large["batch_size"]) == (512, 4096, 2)
    for s_row, l_row in zip(small["rows"], large["rows"]):
        pairs = list(zip(s_row["device_used_bytes"], l_row["device_used_bytes"]))
        # full fine-tuning peaks in the optimizer step, which does not depend on the tokens
        assert all(short <= long for short, long in pairs)
        if s_row["method"] != "Full":
            assert all(short < long for short, long in pairs)


def test_table_human(capsys):
    out = run_ok(capsys, "table")
    for size in TABLE_SIZES:
        assert size in out
    assert "QLoRA 2" in out and "estimated only" in out
    assert "8x7B, 8x22B (mixture of experts): Full rows train transformers' fused experts" in out
    assert len([line for line in out.splitlines() if line.startswith(("Full", "LoRA", "QLoRA "))]) >= 6
    assert "Prefix tuning runs without gradient checkpointing" in " ".join(out.split())
