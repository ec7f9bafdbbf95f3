"""Data-parallel training: which process of a `torchrun` launch this is, the process group, and the few collectives
the runner needs besides DistributedDataParallel's own gradient all-reduce.

`torchrun --nproc-per-node=N -m bench run ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK (and
MASTER_ADDR/MASTER_PORT, which init_process_group reads) in their environment. A plain `python -m bench run`
has none of them and is the world of one process: nothing here then initialises or communicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UsageError

#: what torchrun sets in every process it starts
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train one run together."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone claims the run, writes its files and store rows, and evaluates it."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


SINGLE = World()


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets, Slurm's binding), not every
    core of the machine; os.cpu_count() where the platform has no affinity (macOS, Windows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in the environment; one process when it describes none."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        shown = ", ".join(f"{k}={env.get(k)!r}" for k in ENV_KEYS)
        raise UsageError(f"WORLD_SIZE is set but RANK/LOCAL_RANK are not usable ({shown}); start data-parallel "
                         "training with `torchrun --nproc-per-node=N -m bench run ...`") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local}")
    return World(rank, size, local)


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes (NCCL cannot reduce CPU tensors)."""
    return "nccl" if device.type == "cuda" else "gloo"


def process_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: on CUDA each process of a node takes the GPU of its LOCAL_RANK."""
    if not world.parallel or device.type != "cuda":
        return device
    if device.index is not None:
        raise UsageError(f"--device {device} names one GPU for {world.size} processes; under torchrun pass "
                         "--device cuda (or auto): each process takes the GPU of its LOCAL_RANK")
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s) here: start "
                         "at most one process per GPU (--nproc-per-node)")
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """The default process group for the duration (nothing for one process), destroyed afterwards.

    A process that raises leaves it without waiting for the others; torchrun then stops the remaining ones
    (their collectives also fail once a peer's connection closes, or after torch's process-group timeout)."""
    if not world.parallel:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives and the object collectives use the current device
    dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors handed to a collective must live for the current backend."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank (pickled: tensors and plain data)."""
    if not world.parallel:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not world.parallel:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, world: World) -> bool:
    """Whether `flag` is true on any rank: how a rank's failure at a point all ranks reach is made known to all."""
    if not world.parallel:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce(t: torch.Tensor, op: str, world: World) -> torch.Tensor:
    """`t` reduced over every rank in place ("sum", "min" or "max"); `t` as it is for one process."""
    if world.parallel:
        comm = t.to(_comm_device())
        dist.all_reduce(comm, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
        if comm is not t:
            t.copy_(comm)
    return t


def shard(n: int, world: World) -> slice:
    """This rank's part of a global batch of n: consecutive n / size items (UsageError unless size divides n)."""
    if n % world.size:
        raise UsageError(f"a global batch of {n} images cannot be split evenly over {world.size} processes: make "
                         f"train.batch_size a multiple of --nproc-per-node (train.batch_size is the global batch)")
    per = n // world.size
    return slice(world.rank * per, (world.rank + 1) * per)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A 32-bit seed for the random streams of `rank` (> 0) of a run with this seed, starting at `step`: every rank
    draws its own latents and dropout masks. Rank 0 keeps the run's own seed, so its streams are a single
    process's."""
    digest = hashlib.sha256(f"aegan-bench rank stream {seed} {rank} {step}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def describe(world_size: int, batch_per_rank: int, backend: str) -> str:
    """The training set-up, as the run's device column shows it beside the device."""
    return f"DDP {backend} x{world_size} processes, batch {batch_per_rank} per process"


def training_provenance(parallel: list[list[int]]) -> dict[str, Any]:
    """What a metric value records of how the weights were trained across processes. `parallel` lists the
    (world size, batch per rank) of the run's training sessions, each distinct set-up once in order of use.

    Nothing for a run trained by one process, so that its values carry the same provenance as before data
    parallelism existed; otherwise the world size and per-rank batch, joined with "/" when a resume changed them.
    They are flagged, not refused, when compared (bench.core.provenance.WARN_PROVENANCE): the global batch, steps
    and learning rates are those of one process; BatchNorm's batch statistics (per process on the CPU) and the
    random streams differ, as a change of hardware changes arithmetic."""
    if all(size == 1 for size, _ in parallel):
        return {}
    sizes = [size for size, _ in parallel]
    batches = [batch for _, batch in parallel]
    if len(parallel) == 1:
        return {"train_world_size": sizes[0], "train_batch_per_rank": batches[0]}
    return {"train_world_size": "/".join(map(str, sizes)), "train_batch_per_rank": "/".join(map(str, batches))}
