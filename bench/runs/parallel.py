"""Data-parallel plumbing under torchrun: rank 0 writes at points every rank reaches (on_main), DDP wrappers of
the networks the phases update, and the rule that torchrun trains one run whose batch splits evenly."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from methods import Method

from ..core.config import RunConfig
from ..core.distributed import (
    World,
    any_rank,
    backend_for,
    shard,
)
from ..core.errors import UsageError


class StoppedByMain(RuntimeError):
    """Rank 0 failed while writing at a point every rank reaches (see on_main): the other ranks stop too."""

def on_main(world: World, write: Callable[[], object]) -> None:
    """Run `write` on rank 0 alone. With several processes every rank then learns whether it failed (one
    collective), so that the others stop with it (StoppedByMain) instead of waiting for it at their next one."""
    error: Exception | None = None
    if world.is_main:
        try:
            write()
        except Exception as e:  # noqa: BLE001  (re-raised below, after the other ranks are told)
            error = e
    if any_rank(error is not None, world) and error is None:
        raise StoppedByMain("rank 0 stopped training; its output says why")
    if error is not None:
        raise error


#: DDP does not re-broadcast rank 0's buffers (BatchNorm's running statistics) before each forward: training uses
#: batch statistics, and rank 0's running statistics, the ones saved, depend on its own batches either way. (Every
#: rank starts from the same buffers: the same seed or checkpoint. torch 2.13 renamed the option.)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def data_parallel(method: Method, world: World, device: torch.device) -> dict[str, nn.Module]:
    """One DistributedDataParallel wrapper per network that a phase updates (none for one process); building them
    broadcasts rank 0's weights. On CUDA (NCCL) BatchNorm becomes SyncBatchNorm first, so that batch statistics
    are those of the global batch; gloo has no SyncBatchNorm, so on the CPU they stay per process."""
    if not world.parallel:
        return {}
    names = list(dict.fromkeys(name for ph in type(method).phases for name in ph.modules))
    replicas: dict[str, nn.Module] = {}
    for name in names:
        net = getattr(method, name)
        if backend_for(device) == "nccl":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # the same parameters, in new layers
            setattr(method, name, net)
        replicas[name] = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                 **_NO_BUFFER_SYNC)
    return replicas

def check_data_parallel(cfgs: list[RunConfig], world: World) -> None:
    """Under torchrun: one run, whose global batch splits evenly over the processes."""
    if not world.parallel:
        return
    if len(cfgs) != 1:
        names = ", ".join(c.run_id() for c in cfgs[:4]) + (", ..." if len(cfgs) > 4 else "")
        raise UsageError(f"under torchrun `bench run` trains one run with all {world.size} processes, but this command "
                         f"names {len(cfgs)} ({names}): start one torchrun per run (one method, one seed), or run "
                         "the grid without torchrun (`bench run`, `bench sweep`)")
    shard(cfgs[0].train.batch_size, world)
