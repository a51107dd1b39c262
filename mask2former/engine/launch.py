"""Multi-process launch that also works without GPUs.

detectron2 0.6's `launch` asserts that CUDA is available in every worker and always uses
NCCL. Here, when the machine has enough GPUs the call goes to detectron2 unchanged;
otherwise the workers are CPU processes joined by the gloo backend (one process per
`--num-gpus`, which then means "processes per machine").
"""
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as detectron2_launch
# detectron2's own "auto" port picker; it has no public one.
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

__all__ = ["launch", "uses_gpus"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def uses_gpus(num_processes_per_machine: int) -> bool:
    """Whether the workers get one GPU each (else they run on CPU with gloo)."""
    return torch.cuda.is_available() and torch.cuda.device_count() >= num_processes_per_machine


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = None,
    args=(),
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """Same arguments as detectron2's `launch`; falls back to gloo CPU workers when the
    machine has fewer GPUs than `num_gpus_per_machine`."""
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus and --num-machines must be >= 1, got {num_gpus_per_machine} "
            f"and {num_machines}"
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1 or uses_gpus(num_gpus_per_machine):
        return detectron2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on a single machine")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logging.getLogger(__name__).info(
        "No %d GPUs on this machine: launching %d CPU processes with the gloo backend",
        num_gpus_per_machine,
        num_gpus_per_machine,
    )
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(
    local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout
):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    # detectron2's comm helpers (get_local_rank/size) read this group. detectron2 0.6 has no
    # public function to create it (its own worker sets the module attribute the same way).
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
