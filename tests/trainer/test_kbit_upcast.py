"""QLoRA without prepare_model_for_kbit_training's fp32 upcast (issue 15 point 4): the frozen
non-quantized weights stay in the load dtype, as the estimator then assumes, and the run trains."""

from __future__ import annotations

from conftest import run_inprocess, steps, write_config


def test_frozen_weights_keep_the_load_dtype_only_without_the_upcast(demo_dir):
    import torch

    from trainer.config import TrainConfig
    from trainer.loading import Runtime, load_model, model_layout

    def frozen_dtypes(upcast: bool) -> set:
        cfg = TrainConfig(model=str(demo_dir / "model"), dataset=str(demo_dir / "data.jsonl"), method="qlora",
                          precision="bf16", kbit_upcast=upcast, modules_to_save=())
        with model_layout(cfg):
            model = load_model(cfg, Runtime("cpu", "bf16"))
        return {p.dtype for p in model.parameters() if p.is_floating_point() and not p.requires_grad}

    assert frozen_dtypes(True) == {torch.float32}  # peft's prepare: embeddings, norms, LM head in fp32
    assert frozen_dtypes(False) == {torch.bfloat16}


def test_a_run_without_the_upcast_learns(demo_dir, tmp_path):
    config = write_config(demo_dir, tmp_path / "run", precision="bf16", kbit_upcast=False, max_steps=12,
                          save_steps=0, warmup_steps=2)
    code, events = run_inprocess(config)
    assert code == 0, events[-3:]
    losses = [s["loss"] for s in steps(events)]
    assert len(losses) == 12 and min(losses[-3:]) < losses[0] * 0.9
