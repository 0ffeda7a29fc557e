"""``make-demo``: an offline, seconds-to-build playground for the trainer.

Builds a tiny random-init Llama (GQA, a few million parameters), a byte-level BPE tokenizer with
a chat template, a synthetic word-reversal/sorting dataset and a ready ``run.json``, all from
code: nothing is downloaded, so the demo (and the trainer's tests) work on an offline CPU box.
The task is one a tiny model visibly learns in a minute of CPU time, so the loss chart moves.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planner.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from trainer.config import TrainConfig

SEED = 42
N_EXAMPLES = 2000

# Short, single-BPE-token words (after training) so a 3-5 word example stays well under 64 tokens
# and the model learns an operation on whole tokens rather than spelling.
WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "moon", "tree", "fish", "bird", "star", "rain", "snow",
    "fire", "wind", "rock", "leaf", "frog", "bear", "wolf", "lion", "duck", "goat",
    "milk", "cake", "bread", "corn", "rice", "salt", "gold", "iron", "ship", "boat",
    "road", "hill", "lake", "sea", "sky", "cloud", "stone", "ring", "bell", "drum",
    "book", "pen", "cup", "box", "key", "door", "lamp", "rose", "seed", "wave",
)
# verb -> operation on the word list; both outputs use only words from the prompt.
TASKS: dict[str, Any] = {
    "reverse": lambda ws: list(reversed(ws)),
    "sort": sorted,
}

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
# <|end|> closes every turn and doubles as EOS (as Llama 3's <|eot_id|> does), so `generate`
# stops at the end of the assistant reply without a separate end-of-sequence token.
SPECIAL_TOKENS = [PAD, BOS, END, "<|system|>", "<|user|>", "<|assistant|>"]

# {% generation %} marks the reply (content + <|end|>) for transformers' assistant-token mask
# (apply_chat_template(..., return_assistant_tokens_mask=True)); the newline after <|end|> is
# outside it because the model never needs to produce it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('demo chat template: unknown role ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A little generic English so the tokenizer has merges beyond the task's words (the trainer's
# "text" format and ad-hoc prompts then tokenize sensibly too).
_PROSE = (
    "Fine-tuning adapts a pretrained language model to a new task with a small dataset. "
    "Full fine-tuning updates every weight; LoRA trains small low-rank adapters beside frozen "
    "weights; QLoRA keeps the frozen base in 4-bit NF4 and trains the adapters in higher precision. "
    "The planner estimates memory, time and cost before any GPU time is spent, then launches the "
    "run and charts the loss and the memory it really used. Reverse the words, sort the words, "
    "and answer the question: what is the next word in the list? The quick brown fox jumps over "
    "the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100 1000, and; or: yes! no? (a) [b] {c} \"d\" 'e'"
)


def _log(message: str) -> None:
    # stdout is reserved for machine-readable output (see the events protocol); humans read stderr.
    print(f"make-demo: {message}", file=sys.stderr, flush=True)


def make_examples(n: int = N_EXAMPLES, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` deterministic chat examples: "reverse: a b c" -> "c b a", "sort: ..." -> sorted."""
    rng = random.Random(seed)
    verbs = sorted(TASKS)
    examples = []
    for _ in range(n):
        verb = rng.choice(verbs)
        words = rng.sample(WORDS, rng.randint(3, 5))  # distinct words: the sort order is unambiguous
        examples.append({"messages": [
            {"role": "user", "content": f"{verb}: {' '.join(words)}"},
            {"role": "assistant", "content": " ".join(TASKS[verb](words))},
        ]})
    return examples


def _render(messages: list[dict[str, str]]) -> str:
    # Plain-Python mirror of CHAT_TEMPLATE for the tokenizer's training text (no jinja needed).
    body = "".join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    return BOS + body


def _corpus(examples: list[dict[str, Any]]) -> Iterator[str]:
    for ex in examples:
        yield _render(ex["messages"])
    for _ in range(20):  # weight the prose so its common words earn merges too
        yield _PROSE


def build_tokenizer(examples: list[dict[str, Any]], vocab_size: int = 1024) -> Any:
    """Train a byte-level BPE (GPT-2/Llama 3 style) and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The corpus is small, so BPE runs out of pairs to merge before `vocab_size`: ~674 tokens.
    tok.train_from_iterator(_corpus(examples), trainer=trainer)
    # Like Llama, plain `tokenizer(text)` starts with BOS; the chat template writes its own BOS and
    # apply_chat_template tokenizes with add_special_tokens=False, so chats get exactly one.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD,
                                      model_max_length=512, padding_side="right")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


ARCHS = ("llama", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
"""``make-demo --arch``: a dense Llama, or a mixture-of-experts model of each supported kind."""


SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4),
    "medium": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4),
}
"""``make-demo --size``: tiny (3.5M parameters, the CPU demo), small (98M) and medium (0.77B),
for checking the estimator on a GPU where the CUDA context and cuBLAS workspace would dwarf the
tiny model's tensors (scripts/gpu_check.py). Head size 64 throughout; MLP widths scale with the
hidden size."""


def model_config(arch: str = "llama", vocab_size: int = 1024, bos: int = 1, eos: int = 2, pad: int = 0,
                 size: str = "tiny") -> Any:
    """A tiny config of ``arch`` with the real architecture's parts (GQA, RoPE, RMSNorm, SwiGLU;
    for MoE 4 experts, 2 per token, and each model type's own router and shared experts), at
    ``size`` (:data:`SIZES`).

    Widths are multiples of 64: bitsandbytes' CPU 4-bit inference kernel asserts
    out_features % 32 == 0 and in_features % 64 == 0 (688 crashes ``generate`` on QLoRA)."""
    from transformers import AutoConfig

    if size not in SIZES:
        raise ValueError(f"--size {size!r} is not one of: {', '.join(SIZES)}")
    common = dict(vocab_size=vocab_size, **SIZES[size], max_position_embeddings=512,
                  tie_word_embeddings=False,  # separate lm_head, as in Llama: exercises modules_to_save paths
                  bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, dtype="float32")
    # intermediate 768 = Llama's rule (8/3 * hidden, rounded up to a multiple of 256)
    moe = dict(num_experts_per_tok=2, intermediate_size=768)
    per_arch: dict[str, dict[str, Any]] = {
        "llama": dict(intermediate_size=768),
        "mixtral": dict(moe, num_local_experts=4),
        "qwen2_moe": dict(moe, num_experts=4, moe_intermediate_size=256, shared_expert_intermediate_size=512),
        "qwen3_moe": dict(moe, num_experts=4, moe_intermediate_size=256, head_dim=64),
        "olmoe": dict(moe, num_experts=4, intermediate_size=256),
    }
    if arch not in per_arch:
        raise ValueError(f"--arch {arch!r} is not one of: {', '.join(ARCHS)}")
    scale = SIZES[size]["hidden_size"] // SIZES["tiny"]["hidden_size"]
    widths = {k: v * scale if k.endswith("intermediate_size") else v for k, v in per_arch[arch].items()}
    return AutoConfig.for_model(arch, **common, **widths)


def build_model(tokenizer: Any, seed: int = SEED, arch: str = "llama", size: str = "tiny") -> Any:
    """A random-init model of ``arch`` at ``size`` for ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                          tokenizer.pad_token_id, size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def run_config(root: Path) -> TrainConfig:
    """The ready run: QLoRA, measured on 2 CPU cores to take the loss from ~6.6 to ~3.5 in 60 steps
    (~7 s of training); about 400 steps (loss < 1) reverse word lists correctly."""
    return TrainConfig(
        model=str(root / "model"), dataset=str(root / "data.jsonl"), output_dir=str(root / "runs" / "demo"),
        method="qlora", precision="auto", lora_r=16, lora_alpha=32, lora_dropout=0.0,
        # A random base has a random, frozen output layer: adapters alone can't steer its logits
        # (loss stalls near 5.4). Training lm_head in full, as one does when a chat template adds
        # new tokens to a real base model, fixes that and exercises the modules_to_save path.
        modules_to_save=("lm_head",),
        learning_rate=2e-3, batch_size=8, max_seq_len=64, max_steps=60, logging_steps=1, save_steps=20,
        warmup_steps=5, lr_scheduler_type="cosine", seed=SEED, grad_checkpointing=True,
    )


DEMO_MARKER = ".finetune-demo.json"
"""What make-demo wrote, file by file (SHA-256): a rerun replaces only an unedited demo of ours."""


class DemoError(ValueError):
    """``--out`` cannot take the demo: one line saying why."""


def make_demo(out: str | Path, arch: str = "llama", force: bool = False, size: str = "tiny") -> Path:
    """Build the demo under ``out`` (a new or empty folder, or a previous demo whose files nobody
    edited; ``force`` replaces edited ones); runs/ is never touched. Returns run.json."""
    start = time.perf_counter()
    root = Path(out).expanduser().resolve()
    recorded = _check_target(root, force)
    examples = make_examples()
    data = "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples).encode("utf-8")
    config = run_config(root).to_json().encode("utf-8")
    # Each part is written under a temporary name and renamed into place, and the record comes
    # last: an interrupted make-demo never leaves a half-written file. While files are being
    # swapped the record accepts the old and the new contents, so a rerun is never refused.
    with atomic_dir(root / "model", replace=True) as tmp:
        tokenizer = build_tokenizer(examples)
        _log(f"tokenizer: byte-level BPE, {len(tokenizer)} tokens")
        model = build_model(tokenizer, arch=arch, size=size)
        n_params = sum(p.numel() for p in model.parameters())
        # save_pretrained writes the Hub's layout: MoE experts one tensor per expert projection
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a 3.5M-parameter save needs no progress bar in the log
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        written = {f"model/{rel}": _sha256(tmp / rel) for rel in _tree(tmp)}
        written.update({"data.jsonl": hashlib.sha256(data).hexdigest(), "run.json": hashlib.sha256(config).hexdigest()})
        _record(root, {k: sorted({*recorded.get(k, ()), v}) for k, v in written.items()})
    _log(f"model: {type(model).__name__}, {n_params / 1e6:.2f}M parameters -> {root / 'model'}")
    atomic_write_bytes(root / "data.jsonl", data)
    _log(f"dataset: {len(examples)} examples ({', '.join(sorted(TASKS))}) -> {root / 'data.jsonl'}")
    atomic_write_bytes(root / "run.json", config)
    _record(root, {k: [v] for k, v in written.items()})
    _log(f"done in {time.perf_counter() - start:.1f} s; train with: python -m trainer run --config "
         f"{root / 'run.json'}")
    return root / "run.json"


def _check_target(root: Path, force: bool) -> dict[str, list[str]]:
    """What the previous demo at ``root`` recorded ({} for a new or empty folder); raises
    DemoError for anything that is not ours, or ours but edited (unless ``force``)."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise DemoError(f"--out {root} exists and is not a folder; give a new folder")
    if not root.is_dir() or not any(root.iterdir()):
        return {}
    try:
        recorded = json.loads((root / DEMO_MARKER).read_text(encoding="utf-8"))["files"]
        assert isinstance(recorded, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise DemoError(f"--out {root} already holds files that are not a demo of this trainer; "
                        "give a new or empty folder") from None
    present = [rel for rel in ("data.jsonl", "run.json") if (root / rel).is_file()]
    present += [f"model/{rel}" for rel in _tree(root / "model")]
    edited = [rel for rel in present if _sha256(root / rel) not in recorded.get(rel, ())]
    if edited and not force:
        more = f" (and {len(edited) - 1} more)" if len(edited) > 1 else ""
        raise DemoError(f"{root / edited[0]}{more} changed since make-demo wrote it; pass --force to replace "
                        "the demo's files anyway, or give another --out")
    return recorded


def _record(root: Path, files: dict[str, list[str]]) -> None:
    record = {"kind": "finetune-planner demo", "files": files}
    atomic_write_text(root / DEMO_MARKER, json.dumps(record, indent=1) + "\n")


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def main(out: str, arch: str = "llama", force: bool = False, size: str = "tiny") -> int:
    """``python -m trainer make-demo --out DIR [--arch A] [--size S] [--force]``: prints the run.json path on stdout."""
    import signal

    # SIGTERM (the app closing) unwinds like an exception, so every temporary folder is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        path = make_demo(out, arch, force, size)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: make-demo could not write {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
