"""The few constants physics leaves open, fitted once on resources/reference/measurements.csv.

They are global: no per-model or per-row factor exists anywhere. ``scripts/validate_estimator.py``
prints the error table they produce; refit with ``--fit`` when the stack changes.
"""

from planner.units import MiB

CUDA_CONTEXT = 1024 * MiB
"""What nvidia-smi shows beyond torch's reserved pool: driver context, CUDA runtime, kernel
images, cuBLAS/cuDNN handles. 0.3-0.6 GiB with lazy module loading, ~1 GiB and more without
(CUDA 11.8 / torch 2.0-2.1, the setup of the published rows); fitted: 1.0 GiB."""

CUBLAS_WORKSPACE = 32 * MiB
"""cuBLAS/cuBLASLt workspace torch reserves per stream (32 MiB on Hopper, less on older GPUs)."""

ALLOCATOR_SLACK = 0.40
"""Reserved-but-unallocated memory of torch's caching allocator at the peak, as a fraction of
the transient (activation, logits, workspace) bytes: block rounding and fragmentation from the
allocate/free churn of one step. Persistent tensors are allocated once and waste ~nothing.
Fitted on all rows: 0.4 (the fsdp_qlora LoRA rows report both: 1.1-2.0 GiB reserved over allocated)."""

HOST_LINK_BYTES_PER_S = 25e9
"""Pinned host <-> GPU copy bandwidth, each direction: PCIe 4.0 x16 carries 32 GB/s raw and
CUDA's bandwidthTest measures 24-26 GB/s pinned (PCIe 5.0 about twice that). Not fitted; what
activation offloading's copies cost in the time model (planner/cost.py)."""

HOST_SECONDS_PER_LAYER: dict[tuple[bool, bool, bool], float] = {
    (False, False, False): 0.62e-3,
    (False, True, False): 1.53e-3,
    (True, False, False): 1.19e-3,
    (True, True, False): 2.56e-3,
    (False, False, True): 0.20e-3,
    (False, True, True): 0.35e-3,
    (True, False, True): 0.59e-3,
    (True, True, True): 0.99e-3,
}
"""Host seconds per decoder layer and micro-batch, by (adapters on the layers, checkpointing,
torch.compile): Python, the dispatcher and autograd before any kernel runs, measured with a Llama
of width 64 and 8 tokens on the CPU, where the arithmetic is negligible
(``scripts/bench_host_overhead.py [--compile]``, torch 2.13, transformers 5.24, peft 0.21, one
thread of this project's 2-core machine; the compiled ones the mean of two runs). Not fitted. A
GPU host adds CUDA's own launch per kernel, so this is the floor of its cost."""

HOST_SECONDS_ADALORA_PER_MODULE = 0.28e-3
"""Host seconds AdaLoRA adds per adapted linear and optimizer step: its orthogonality penalty in
forward and its rank allocator after the update (``update_and_allocate``), measured as
``HOST_SECONDS_PER_LAYER`` (``adalora`` less ``lora``, checkpointing off: 1.99 and 1.98 ms per
layer of seven adapted linears in two runs). Not fitted."""

HOST_SECONDS_PER_STEP = 3.94e-3
"""What the Hugging Face Trainer's loop adds on the host once per optimizer step (the data loader
and collator, AdamW, clipping, the schedule, zeroing, logging): a Trainer step less the bare
forward and backward of the same model, measured as ``HOST_SECONDS_PER_LAYER``. Not fitted."""

MATMUL_UTILIZATION = 0.678
"""Achieved / dense-peak 16-bit FLOP/s of training's large matmuls, on every GPU (the peaks are
each card's own, with its accumulate precision: resources/gpus.json): the median over the rows of
resources/reference/throughput.csv of the utilization that reproduces each row
(``scripts/validate_cost.py --fit``), once the memory-bound traffic, the host and the
communication are timed on their own (planner/cost.py). One constant: no per-GPU, per-method or
per-row factor."""
