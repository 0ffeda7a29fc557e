"""The activation model's premise about bitsandbytes, pinned on the installed version."""


def test_a_4bit_matmul_keeps_no_input_for_backward():
    """planner/activations.py counts a frozen 4-bit linear's input as kept only where something
    else needs it, as for a frozen nn.Linear. bitsandbytes 0.41-0.43.1 kept it on the autograd
    context ((A, B)); from 0.43.2 (PR #1270) only the weight. On the CPU, as on a GPU, the same
    autograd function runs."""
    import bitsandbytes as bnb
    import torch

    torch.manual_seed(0)
    linear = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    linear.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
    linear = linear.to("cpu")
    out = linear(torch.randn(8, 64, requires_grad=True))
    kept_input, weight = out.grad_fn.tensors
    assert type(out.grad_fn).__name__ == "MatMul4BitBackward" and weight.dtype == torch.uint8
    assert kept_input is None, f"bitsandbytes {bnb.__version__} keeps the input: count it in planner/activations.py"
