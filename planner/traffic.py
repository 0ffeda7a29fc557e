"""Memory-bound traffic of a training step: the bytes per token that every kernel but the large
matmuls moves, timed over memory bandwidth (the roofline's memory side: Williams et al. 2009,
"Roofline: An Insightful Visual Performance Model"). Their arithmetic intensity is a few FLOPs
per byte, far below any GPU's ridge point, so their time is their bytes.

Each term counts, per element it touches, the bytes its kernels read and write in forward:

* ``eager`` runs each PyTorch operation as its own kernel, which reads its inputs from memory and
  writes its output there (transformers 5.24 ``LlamaRMSNorm``, ``apply_rotary_pos_emb``,
  ``LlamaMLP``, ``ForCausalLMLoss``; peft 0.21 ``lora.Linear.forward``);
* ``compile`` (torch.compile's inductor) fuses each chain of pointwise and reduction operations
  into one kernel that reads the chain's inputs once and writes its outputs once (Ansel et al.
  2024, "PyTorch 2"); matmuls, attention and gathers stay library kernels;
* ``unsloth`` fuses the same chains by hand in Triton (planner/fused_kernels.py) and adds the
  adapters' product into the base output in place (``matmul_lora``: ``addmm_``).

Backward moves twice forward's bytes (each operation's backward reads the incoming gradient and
what it saved, and writes the outgoing gradient), the recompute under checkpointing once more.
LoRA's A and B are matmuls too, but of rank r: about r FLOPs per byte of the input they read, so
they are timed here by their bytes rather than by their FLOPs (planner/cost.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from planner.activations import residual_bytes
from planner.adapted import adapted, is_feedforward
from planner.catalog.arch import Architecture, Block, Linear
from planner.fused_kernels import fused
from planner.options import TrainSetup
from planner.units import FP32


@dataclass(frozen=True)
class Traffic:
    """Bytes per token one micro-batch's memory-bound kernels move (forward, backward, recompute)."""

    norms: float
    """The decoder layers' norms."""
    rope: float
    """Rotary embeddings applied to the queries and keys."""
    attention_copy: float
    """The attention output's (batch, heads, tokens, dim) layout copied back for the output projection."""
    activation: float
    """The MLP's activation function, and the gate's product with the up projection."""
    residual: float
    """The residual stream's two adds per layer."""
    experts: float
    """A mixture of experts' token routing: each visited expert's inputs gathered, its weighted
    output added back."""
    adapters: float
    """LoRA's low-rank matmuls and the passes around them (input cast, dropout, scaling, the add
    into the base output); IA3's scaling."""
    casts: float
    """bitsandbytes' 4-bit linears cast an fp32 input (QLoRA's upcast residual stream) to the
    compute dtype and their output back to fp32 (``Linear4bit.forward``, bitsandbytes 0.50)."""
    loss: float
    """The cross-entropy over the vocabulary: the fp32 logits, the log-softmax."""

    @property
    def total(self) -> float:
        return (self.norms + self.rope + self.attention_copy + self.activation + self.residual + self.experts
                + self.adapters + self.casts + self.loss)


def _visits(block: Block, lin: Linear) -> int:
    """How many of a linear's copies each token runs through: top_k of an expert's, all of another's."""
    return block.experts_per_token if lin.role == "expert" else lin.copies


def _fuses(setup: TrainSetup, block: Block) -> bool:
    """Whether the layer's pointwise chains run fused: compiled, or Unsloth's kernels on it."""
    return setup.kernels == "compile" or fused(block, setup)


def _norm(arch: Architecture, setup: TrainSetup, fuses: bool) -> float:
    """Bytes per normalised element: ``LlamaRMSNorm`` casts to fp32, squares, reduces, multiplies
    by 1/rms, casts back and scales by its weight (six kernels); LayerNorm is one kernel. Fused:
    the input read, the output written."""
    r, c = residual_bytes(setup), setup.compute_bytes
    if fuses or arch.norm_kind != "rms":
        return r + c
    return (r + FP32) + 2 * FP32 + FP32 + 2 * FP32 + (FP32 + c) + 2 * c


def _adapter(lin: Linear, setup: TrainSetup, fuses: bool, unsloth: bool) -> float:
    """Forward bytes per token of one adapted linear. 16-bit runs compute under autocast (the HF
    Trainer's ``bf16``/``fp16``; planner/autocast_policy.py): peft casts the input to an fp32
    adapter's dtype, then autocast casts it back to 16 bits for ``lora_A``'s matmul, so both
    products, the scaling and the add are 16-bit."""
    c = setup.compute_bytes
    if not setup.low_rank:  # IA3: the scaled input (feedforward) or output, read and written
        return 2 * c * (lin.d_in if is_feedforward(lin) else lin.d_out)
    low_rank = c * (lin.d_in + lin.d_out)  # A reads the input, B writes its output
    if unsloth:  # B's product is added into the base output in place
        return low_rank + 2 * c * lin.d_out
    a = FP32 if setup.adapters_compute_fp32 else c
    cast, dropout = a != c, setup.lora_dropout > 0
    if fuses:  # one pass before A (casts and dropout, its mask regenerated from the seed), one after B
        return (2 * c if cast or dropout else 0) * lin.d_in + low_rank + 3 * c * lin.d_out
    before = (2 * (c + a) if cast else 0) + ((2 * a + 1) if dropout else 0)  # dropout writes a 1-byte mask
    # scaled, then added; DoRA (peft lora/dora.py) scales the base output by m - 1 and the product by
    # m and by the scaling, sums them, then adds that: 12 passes of c bytes where LoRA has 5
    after = 12 * c if setup.use_dora else 2 * c + 3 * c
    return before * lin.d_in + low_rank + after * lin.d_out


def traffic_per_token(arch: Architecture, setup: TrainSetup) -> Traffic:
    """The memory-bound bytes per token of one micro-batch (see the module's docstring)."""
    c, r, h = setup.compute_bytes, residual_bytes(setup), arch.hidden_size
    q_w, kv_w = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    layer_passes = 3 + (1 if setup.grad_checkpointing else 0)  # forward, backward (2x), recompute
    # QLoRA's fp32 residual stream reaches 4-bit linears whose outputs come back in fp32: RoPE and the
    # MLP's activation then run in fp32 too
    four_bit = setup.method == "qlora" and (setup.quant or "nf4") in ("nf4", "fp4") and r != c
    terms = {f.name: 0.0 for f in fields(Traffic) if f.name != "loss"}
    for block in arch.blocks:
        fuses = _fuses(setup, block)
        unsloth = fused(block, setup)
        o = r if four_bit and not fuses else c  # the linears' outputs
        per_layer = {
            "norms": block.norms * h * _norm(arch, setup, fuses),
            # q*cos, rotate_half's negation and concatenation, *sin, the sum: ten passes
            "rope": (q_w + kv_w) * (2 * c if fuses else 10 * o),
            "attention_copy": 2 * c * arch.num_heads * arch.v_head_dim,
            "activation": block.ffn_width * ((3 * c if fuses else 5 * o) if block.gated else 2 * o),
            "residual": 2 * 3 * r * h,
            "experts": 6 * c * h * block.experts_per_token if block.experts else 0.0,
            "adapters": sum(_adapter(lin, setup, fuses, unsloth) * _visits(block, lin)
                            for lin in block.linears if adapted(lin, setup)),
            # each cast reads one dtype and writes the other (compiled, it fuses into its neighbours)
            "casts": sum((r + c) * (lin.d_in + lin.d_out) * _visits(block, lin)
                         for lin in block.linears if lin.role != "router") if o != c else 0.0,
        }
        for name, value in per_layer.items():
            terms[name] += block.count * layer_passes * value
    # logits.float(), then log-softmax's passes (its max, its sum of exponentials, its output), by
    # chunks or whole alike; compiled, or Unsloth's fused cross-entropy, reads the 16-bit logits twice
    fused_loss = setup.kernels in ("compile", "unsloth")
    loss = (2 * c if fused_loss else (c + FP32) + 3 * FP32) * arch.vocab_size
    return Traffic(**terms, loss=3 * loss)
