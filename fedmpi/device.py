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
