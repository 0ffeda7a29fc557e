"""The Plan page's Qt-free logic: form values -> four setups -> stacked GiB bars and verdicts."""

import subprocess
import sys
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.gui.plan.model import (
    TERMS,
    VARIANTS,
    FormValues,
    build_setups,
    compute_plan,
    stack_bottoms,
    summary_lines,
    variant_label,
)
from planner.units import GiB, fmt_gib

ROOT = Path(__file__).resolve().parents[2]


def test_four_variants_share_the_form_values():
    values = FormValues(precision="fp16", optimizer="adamw_8bit", batch_size=3, seq_len=512, lora_r=8,
                        grad_checkpointing=False, attention="eager")
    setups = build_setups(values)
    assert [(s.method, s.quant) for s in setups] == [("full", None), ("lora", None), ("qlora", "int8"),
                                                      ("qlora", "nf4")]
    for s in setups:
        assert (s.precision, s.optimizer, s.batch_size, s.seq_len, s.lora_r, s.grad_checkpointing,
                s.attention) == ("fp16", "adamw_8bit", 3, 512, 8, False, "eager")


@pytest.mark.parametrize("precision, full", [("bf16", "Full 16-bit"), ("fp16", "Full 16-bit"),
                                             ("fp32", "Full 32-bit"), ("bf16-mixed", "Full AMP")])
def test_labels(precision, full):
    assert [variant_label(v, precision) for v in VARIANTS] == [full, "LoRA", "QLoRA 8-bit", "QLoRA 4-bit"]


def test_stack_adds_up_to_device_used():
    plan = compute_plan(FormValues())
    assert plan.model == "meta-llama/Llama-3.1-8B"
    assert set(plan.heights) == set(TERMS)
    for i, e in enumerate(plan.estimates):
        top = plan.bottoms[TERMS[-1]][i] + plan.heights[TERMS[-1]][i]
        assert top == pytest.approx(e.device_used_bytes / GiB)
        assert plan.heights["weights"][i] == e.breakdown.weights / GiB
    assert plan.bottoms["weights"] == (0.0,) * len(VARIANTS)


def test_bottoms_are_running_sums():
    stack = {t: (1.0, 2.0) for t in TERMS}
    bottoms = stack_bottoms(stack)
    assert [bottoms[t] for t in TERMS] == [(float(k), 2.0 * k) for k in range(len(TERMS))]


def test_bigger_batch_means_more_activations_not_more_weights():
    small, big = compute_plan(FormValues(batch_size=1)), compute_plan(FormValues(batch_size=8))
    for i in range(len(VARIANTS)):
        assert big.heights["weights"][i] == small.heights["weights"][i]
    lora = 1
    assert big.heights["activations"][lora] > small.heights["activations"][lora]


def test_unknown_model_is_a_planner_error():
    with pytest.raises(PlannerError):
        compute_plan(FormValues(model="no-such-org/no-such-model"))


def test_summary_says_fits_or_not():
    plan = compute_plan(FormValues())
    used = plan.device_used_gib
    gpu = (max(used) + min(used)) / 2  # the biggest bar cannot fit, the smallest does
    lines = summary_lines(plan, gpu)
    assert len(lines) == 4
    assert lines[0].startswith("Full 16-bit: device used ")
    biggest, smallest = used.index(max(used)), used.index(min(used))
    assert f"does not fit on {fmt_gib(gpu)}" in lines[biggest]
    assert f"— fits on {fmt_gib(gpu)}" in lines[smallest]
    assert plan.fits(gpu)[biggest] is False and plan.fits(gpu)[smallest] is True
    assert all("— fits on 10000 GiB" in line for line in summary_lines(plan, 10_000.0))


def test_plan_model_does_not_import_qt():
    code = "import sys, planner.gui.plan.model; print([m for m in ('PySide6', 'pyqtgraph') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
