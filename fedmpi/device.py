"""Which device a worker trains on.

With CUDA, each worker takes the GPU of its node-local worker index, modulo
the GPUs it can see. torch counts only the GPUs in CUDA_VISIBLE_DEVICES, so a
scheduler that hands each task its own GPU (SLURM's --gpus-per-task) gives
every worker `cuda:0` of its own, and one that shows all GPUs to every task
gives worker i of the node GPU i.
"""

from __future__ import annotations

from fedmpi.errors import UsageError


def pick_device(requested: str, node_worker_index: int, cuda_count: int) -> str:
    if requested == "cpu":
        return "cpu"
    if cuda_count == 0:
        if requested == "cuda":
            raise UsageError("config: device is cuda but this worker sees no CUDA GPU "
                             "(check CUDA_VISIBLE_DEVICES and the torch build); use device: auto or cpu")
        return "cpu"
    return f"cuda:{node_worker_index % cuda_count}"


def limit_threads(threads: int) -> None:
    """`train.threads` for torch and for the BLAS under numpy/scipy (the MI estimators).

    Unlimited, OpenBLAS starts a thread per core for every small matrix
    product: with co-located ranks this made the decoder estimator 9x slower
    (2.25 s instead of 0.27 s for 128 examples on 2 cores, measured).
    threadpoolctl limits the libraries loaded so far; the environment
    variables limit those loaded later (scipy's own OpenBLAS is loaded only
    when an estimator first needs it), which read them when they start.
    """
    import os

    import torch
    from threadpoolctl import threadpool_limits
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
