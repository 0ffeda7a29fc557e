"""What CUDA autocast does to each op, as data: precise mode replays it on the meta device.

HF Trainer runs the forward under ``torch.autocast("cuda", bf16|fp16)`` whenever ``bf16``/``fp16``
is set, even for a model already stored in 16 bits. That decides the dtype of every saved
activation: a fp32 LoRA adapter's input is cast to 16 bits before its matmul, while the norms'
``pow``/``rsqrt`` and ``softmax`` run in fp32. The meta device has no autocast dispatch key, and
a CPU-only torch cannot autograd through fake CUDA tensors, so precise mode applies these rules
itself, at the Python API surface (where autocast sits, above autograd).

Source: the CUDA lists of ``torch/testing/_internal/autocast_test_lists.py`` (torch 2.13), which
mirror the registrations in ATen's ``autocast_mode.cpp``; a test checks this table still covers
them. Ops outside these lists run in their inputs' dtypes, as under real autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

LOWER = "lower"
"""Cast floating inputs to the autocast dtype (bf16/fp16); fp32 weights' casts are cached."""
FP32 = "fp32"
"""Cast floating inputs to fp32."""
FP32_DTYPE = "fp32_dtype"
"""Reductions with a ``dtype`` argument: fp32 output unless the caller chose a dtype."""
PROMOTE = "promote"
"""Cast floating inputs to the widest floating dtype among them."""


@dataclass(frozen=True)
class CastPolicy:
    rules: dict[str, str]

    def rule(self, name: str) -> str | None:
        # Tensor methods reach __torch_function__ under their dunder names
        return self.rules.get(name.strip("_").removeprefix("r") if name.startswith("__") else name)


def _rules(**groups: str) -> dict[str, str]:
    return {op: rule for ops, rule in groups.items() for op in ops.split()}


CUDA = CastPolicy(_rules(**{
    "_convolution conv1d conv2d conv3d conv_tbc conv_transpose1d conv_transpose2d conv_transpose3d "
    "convolution prelu addmm addmv addr matmul einsum mm mv chain_matmul addbmm baddbmm bmm linear "
    "linalg_vecdot linalg_multi_dot scaled_dot_product_attention cudnn_convolution "
    "cudnn_convolution_transpose _thnn_fused_lstm_cell _thnn_fused_gru_cell lstm_cell gru_cell "
    "rnn_tanh_cell rnn_relu_cell": LOWER,
    "acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan pow softplus "
    "layer_norm rms_norm group_norm norm cosine_similarity poisson_nll_loss cosine_embedding_loss "
    "hinge_embedding_loss kl_div margin_ranking_loss triplet_margin_loss "
    "binary_cross_entropy_with_logits dist pdist cdist renorm logsumexp nll_loss nll_loss2d l1_loss "
    "smooth_l1_loss mse_loss multilabel_margin_loss soft_margin_loss multi_margin_loss huber_loss": FP32,
    "softmax log_softmax cumprod cumsum prod sum": FP32_DTYPE,
    "addcdiv addcmul atan2 bilinear cross dot vdot grid_sampler index_put tensordot scatter_add "
    "cat stack": PROMOTE,
}))

# torch's CPU autocast (AutocastCPUTestLists in the same file): no GPU here, so the replay is
# checked against torch's real CPU autocast on real tensors with this table.
CPU = CastPolicy(_rules(**{
    "conv1d conv2d conv3d bmm mm matmul baddbmm addmm addbmm conv_tbc conv_transpose1d conv_transpose2d "
    "conv_transpose3d prelu linear scaled_dot_product_attention _native_multi_head_attention": LOWER,
    "avg_pool3d binary_cross_entropy reflection_pad1d nll_loss nll_loss2d l1_loss smooth_l1_loss mse_loss "
    "multilabel_margin_loss soft_margin_loss multi_margin_loss huber_loss poisson_nll_loss "
    "cosine_embedding_loss hinge_embedding_loss margin_ranking_loss triplet_margin_loss "
    "binary_cross_entropy_with_logits": FP32,
    "cat stack": PROMOTE,
}))
