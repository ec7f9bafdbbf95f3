"""The runner: trains any registered method under a protocol, checkpoints, resumes, evaluates, stores.

The loop knows no method. A method lists its phases; for each phase the runner freezes every other
parameter, asks the method for that phase's losses, and owns backward, the optimiser step and the
Keras-style learning-rate decay. One Adam optimiser per phase by default, as with separately compiled
Keras models; optim.state=network shares one per network, so that loss weights balance the phases.

Under torchrun one run is trained by several processes with DistributedDataParallel (docs/scale-out.md):
each rank takes its shard of every global batch and draws its own latents, DDP averages the gradients of
the networks a phase updates, and rank 0 alone claims the run, writes its files and store rows, and
evaluates it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm import tqdm

from methods import METHODS, Method, Phase, StepContext
from methods.trained import CHECKPOINT, build_method, load_weights, placed, run_checkpoint
from metrics import evaluate

from .core.checkpoint import CheckpointError, as_no_space, load_checkpoint, save_checkpoint
from .core.config import RunConfig
from .core.console import fit
from .core.data import DatasetError, ImageData, check_run_data, load_dataset
from .core.device import autocast, device_name
from .core.distributed import (
    SINGLE,
    World,
    all_reduce,
    any_rank,
    backend_for,
    broadcast_object,
    describe,
    gather_objects,
    rank_seed,
    shard,
    training_provenance,
)
from .core.errors import UsageError
from .core.lease import Held, Lease, LeaseLost, acquire
from .core.provenance import code_version, package_versions
from .core.result_file import write_result
from .core.store import STORE_ERRORS, Store
from .core.tempfiles import remove_orphans, replace_text

#: the claim of the process that trains and evaluates a run (bench.lease)
LEASE = "lease.json"


class DivergedError(RuntimeError):
    pass


class StoppedByMain(RuntimeError):
    """Rank 0 failed while writing at a point every rank reaches (see on_main): the other ranks stop too."""


def to_batch(x_uint8: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x_uint8.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# --- training state -------------------------------------------------------------------------------------
@dataclass
class TrainState:
    method: Method
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]
    latent_gen: torch.Generator
    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches done in the current epoch
    finished: bool = False
    train_seconds: float = 0.0
    images_seen: int = 0  # by every process together
    #: (world size, batch per process) of each training set-up the run has had, in order (see
    #: bench.core.distributed.training_provenance)
    parallel: list[list[int]] = field(default_factory=list)
    #: DistributedDataParallel wrappers of the networks the phases update, by name, while several processes train
    replicas: dict[str, nn.Module] = field(default_factory=dict)

    def state_dict(self, cfg: RunConfig, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint. "latent_gen" and "rng" are this process's streams (rank 0's under torchrun, which a
        single process resumes with); `ranks` holds every rank's, for a resume by as many processes."""
        return {
            "config": cfg.to_dict(),
            # the data shape the nets were built for: lets a model be rebuilt without its dataset (sample grids)
            "spec": dataclasses.asdict(self.method.spec),
            "model": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "latent_gen": self.latent_gen.get_state(),
            "rng": rng_state(),
            "step": self.step, "epoch": self.epoch, "pos": self.pos, "finished": self.finished,
            "train_seconds": self.train_seconds, "images_seen": self.images_seen, "parallel": self.parallel,
            **({"ranks": ranks} if ranks is not None else {}),
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        self.method.load_state_dict(ckpt["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][k])
        self.latent_gen.set_state(ckpt["latent_gen"])
        set_rng_state(ckpt["rng"])
        for k in ("step", "epoch", "pos", "finished", "train_seconds", "images_seen"):
            setattr(self, k, ckpt[k])
        self.parallel = [list(p) for p in ckpt.get("parallel", [])]  # absent from checkpoints before DDP

    def rank_streams(self, ckpt: dict[str, Any] | None, seed: int, world: World) -> None:
        """The latent generator and global RNGs of a rank > 0: its own from the checkpoint of a run trained by as
        many processes, else fresh streams derived from (seed, rank, step), never another rank's."""
        entries = (ckpt or {}).get("ranks") or []
        if world.rank < len(entries):
            self.latent_gen.set_state(entries[world.rank]["latent_gen"])
            set_rng_state(entries[world.rank]["rng"])
        else:
            stream = rank_seed(seed, world.rank, self.step)
            self.latent_gen.manual_seed(stream)
            seed_everything(stream)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain numbers, which the weights-only unpickler reads."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def optimizer_keys(cfg: RunConfig, phase: Phase) -> tuple[str, ...]:
    """The optimisers a phase steps: its own one, or one per network it updates (see OptimConfig.state)."""
    return (phase.name,) if cfg.optim.state == "phase" else phase.modules


def make_state(cfg: RunConfig, method: Method) -> TrainState:
    groups: dict[str, tuple[list[torch.nn.Parameter], str]] = {}
    for ph in type(method).phases:
        for key in optimizer_keys(cfg, ph):
            params = method.phase_parameters(ph) if cfg.optim.state == "phase" else \
                list(getattr(method, key).parameters())
            if key in groups and cfg.optim.lr(groups[key][1]) != cfg.optim.lr(ph.lr):
                raise ValueError(f"{method.name}: network {key} is updated with two learning rates")
            groups[key] = (params, ph.lr)
    optimizers, schedulers = {}, {}
    decay = cfg.optim.decay
    for key, (params, lr_name) in groups.items():
        opt = torch.optim.Adam(params, lr=cfg.optim.lr(lr_name), betas=(cfg.optim.beta1, cfg.optim.beta2))
        optimizers[key] = opt
        # stepped once per training step, so t counts iterations whichever way optimisers are keyed
        schedulers[key] = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + decay * t))
    return TrainState(method, optimizers, schedulers, torch.Generator().manual_seed(cfg.seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(cfg: RunConfig, n: int, epoch: int) -> torch.Tensor:
    """The shuffle of one epoch depends on (seed, epoch) only, so a resumed epoch sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))


def phase_backward(method: Method, phase, x: torch.Tensor, ctx: StepContext, device: torch.device,
                   precision: str, replicas: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Losses of one phase and their gradients, which reach exactly the phase's parameters: every other
    parameter is frozen for the duration (D while G learns to fool it, and so on).

    `replicas` (several processes): the DDP wrappers of the networks; the phase's own networks are called through
    theirs, so that DDP averages exactly their gradients over the processes, and frozen ones are called bare."""
    active = {id(p) for p in method.phase_parameters(phase)}
    own = {name: replicas[name] for name in phase.modules if name in replicas} if replicas else {}
    for p in method.parameters():
        p.requires_grad_(id(p) in active)
    try:
        with method.substituted(own), autocast(device, precision):
            losses = method.phase_loss(phase.name, x, ctx)
        losses["loss"].backward()
    finally:
        for p in method.parameters():
            p.requires_grad_(True)
    return losses


def train_step(state: TrainState, x: torch.Tensor, cfg: RunConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """One step: every phase of the method in order. Returns the logged losses as detached tensors on the device:
    converting them to numbers here would wait for the device at every step (see LossMeter)."""
    method = state.method
    ctx = StepContext(step=state.step, epoch=state.epoch, rec_weight=cfg.loss.rec_weight_at(state.epoch),
                      adv_weight=cfg.loss.adv_weight, generator=state.latent_gen)
    logs: dict[str, torch.Tensor] = {}
    for ph in type(method).phases:
        opts = [state.optimizers[k] for k in optimizer_keys(cfg, ph)]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        losses = phase_backward(method, ph, x, ctx, device, cfg.train.precision, state.replicas)
        for opt in opts:
            opt.step()
        for k, v in losses.items():
            logs[f"{ph.name}/{k}"] = v.detach()
    for sched in state.schedulers.values():
        sched.step()
    return logs


class LossMeter:
    """The logged losses of the steps since the last log line, summed on the device.

    Reading a loss as a Python number waits for the device; doing it for every loss at every step kept a GPU
    idle between steps. Here the losses stay on the device and are read together, with one host
    synchronisation, every train.log_every steps (and before a checkpoint): the log line carries their mean
    over the interval. A non-finite loss is still caught: beside the sums, the first step at which each loss
    was not finite is kept on the device too."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sums: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None  # per loss: the first step it was not finite; +inf while none
        self.steps = 0

    def add(self, losses: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.detach().reshape(()).double() for v in losses.values()])
        if self.sums is None:
            self.keys = list(losses)
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full_like(values, math.inf)
        self.sums += values
        self.first_bad = torch.where(torch.isfinite(values), self.first_bad, self.first_bad.clamp(max=step))
        self.steps += 1

    def read(self, world: World = SINGLE, flag: bool = False) -> tuple[dict[str, float], bool]:
        """The mean of each loss over the steps since the last reset, and whether `flag` is true on any rank.
        One host synchronisation; with several processes the means are over every rank's losses (each the mean
        of its shard, so together the global batch's) and the read is collective: every rank must call it at
        the same step. Raises DivergedError, naming the first step and the losses that were not finite at it,
        when any was not on any rank, on every rank alike."""
        if self.sums is None or not self.steps:
            return {}, any_rank(flag, world)
        sums = self.sums.clone()
        # the earliest bad step is the maximum of its negation, reduced with the flag in one collective
        latest = torch.cat([-self.first_bad, torch.tensor([1.0 if flag else 0.0], dtype=torch.float64,
                                                          device=self.sums.device)])
        all_reduce(sums, "sum", world)
        all_reduce(latest, "max", world)
        values = torch.cat([sums, latest]).tolist()
        n = len(self.keys)
        sums_h, first_bad, flagged = values[:n], [-v for v in values[n : 2 * n]], values[2 * n] > 0
        step = min(first_bad)
        if math.isfinite(step):
            bad = [k for k, s in zip(self.keys, first_bad) if s == step]
            raise DivergedError(f"non-finite loss at step {int(step)}: {', '.join(bad)}")
        return {k: v / (self.steps * world.size) for k, v in zip(self.keys, sums_h)}, flagged

    def reset(self) -> None:
        if self.sums is not None:
            self.sums.zero_()
            self.first_bad.fill_(math.inf)
        self.steps = 0


@torch.no_grad()
def save_samples(method: Method, path: Path, z: torch.Tensor, device, precision: str) -> None:
    was_training = method.training
    method.eval()
    with autocast(device, precision):
        x = method.decode(z.to(device)).float()
    method.train(was_training)
    save_image(x.cpu(), path, nrow=8)


# --- one run ------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    message: str = ""


def run_one(cfg: RunConfig, out: Path, store: Store, data: ImageData, device: torch.device,
            metrics: list[str] | None = None, overwrite: bool = False, progress: bool = True,
            followers: Followers | None = None) -> RunResult:
    """Train (or resume) one run, then evaluate what is not yet stored. Never loses stored results.

    The run is first claimed (bench.lease): a run that another live process holds is skipped. A damaged
    checkpoint or a full disk fails this run only, with a message saying what to do, and the store says so.
    Under torchrun this is rank 0's part; `followers` are the other ranks, which train with it."""
    followers = followers or Followers(SINGLE)
    run_id = cfg.run_id()
    run_dir = out / "runs" / run_id
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    try:
        claim = acquire(run_dir / LEASE)
    except OSError as e:
        if (err := as_no_space(e, run_dir / LEASE)) is None:
            raise
        return _failed(store, run_id, run_dir, err)
    if isinstance(claim, Held):
        return RunResult(run_id, run_dir, "skipped", f"another process holds it: {claim.describe()}")
    with claim as lease:
        if lease.took_over:
            print(fit(f"{run_id}: taking over an abandoned run ({lease.took_over})"), file=sys.stderr)
        # temporaries of earlier holders (killed, or out of disk space); ours have not begun
        remove_orphans(run_dir, run_dir / "samples")
        try:
            return _run_claimed(cfg, run_dir, store, data, device, lease, metrics, overwrite, progress, followers)
        except LeaseLost as e:  # another process has the run now: leave it the store and the files
            return RunResult(run_id, run_dir, "skipped", str(e))
        except (CheckpointError, OSError) as e:
            err = e if isinstance(e, CheckpointError) else as_no_space(e, run_dir)
            if err is None:
                raise
            return _failed(store, run_id, run_dir, err)


class Followers:
    """Rank 0's side of the start of data-parallel training. The other ranks wait (in `follow`) to learn whether
    rank 0 trains the run and from which checkpoint; they are told exactly once: `start` when rank 0 is about to
    train, else `release` (also after an error), so that none waits for a message that never comes."""

    def __init__(self, world: World):
        self.world = world
        self.told = not world.parallel

    def start(self, ckpt: dict[str, Any] | None, data: ImageData) -> None:
        self._tell({"checkpoint": ckpt, "train_sha256": data.train_sha256})
        if any_rank(False, self.world):  # a rank loaded other training images: it says so too
            raise DatasetError("another process of this torchrun loaded other training images than rank 0 (its "
                               "--data-root or dataset cache differs): every process must see the same dataset")

    def release(self) -> None:
        if not self.told:
            self._tell(None)

    def _tell(self, plan: dict[str, Any] | None) -> None:
        self.told = True
        broadcast_object(plan, self.world)


def follow(cfg: RunConfig, out: Path, data: ImageData, device: torch.device, world: World) -> RunResult:
    """A rank other than 0 trains the run rank 0 claimed, in step with it, and writes nothing: rank 0 owns the run's
    files, its store rows and its evaluation. It needs the dataset, not the output directory."""
    run_id = cfg.run_id()
    run_dir = out / "runs" / run_id
    plan = broadcast_object(None, world)
    if plan is None:
        return RunResult(run_id, run_dir, "skipped", f"rank 0 does not train {run_id}")
    if any_rank(plan["train_sha256"] != data.train_sha256, world):
        raise DatasetError(f"rank {world.rank} loaded other {cfg.dataset} training images than rank 0 (split digest "
                           f"{data.train_sha256[:16]} vs {plan['train_sha256'][:16]}): every process must see the "
                           "same dataset (--data-root, $AEGAN_BENCH_CACHE)")
    seed_everything(cfg.seed)
    method = placed(build_method(cfg, data), cfg, device)
    state = make_state(cfg, method)
    ckpt = plan["checkpoint"]
    if ckpt is not None:
        state.load(ckpt)
    state.rank_streams(ckpt, cfg.seed, world)
    try:
        _train(cfg, state, data, device, run_dir, progress=False, world=world)
    except (DivergedError, StoppedByMain) as e:  # rank 0 records and reports it
        return RunResult(run_id, run_dir, "diverged" if isinstance(e, DivergedError) else "stopped", str(e))
    return RunResult(run_id, run_dir, "done")


def _failed(store: Store, run_id: str, run_dir: Path, err: Exception) -> RunResult:
    """A run that failed without a traceback (damaged checkpoint, full disk): the store says so."""
    with contextlib.suppress(*STORE_ERRORS, OSError):  # the store may sit on the same full disk
        if store.get_run(run_id) is not None:
            store.set_status(run_id, "failed", str(err))
            write_result(store, run_id, run_dir)
    return RunResult(run_id, run_dir, "failed", str(err))


def _run_claimed(cfg: RunConfig, run_dir: Path, store: Store, data: ImageData, device: torch.device, lease: Lease,
                 metrics: list[str] | None, overwrite: bool, progress: bool, followers: Followers) -> RunResult:
    run_id = cfg.run_id()
    out = run_dir.parent.parent
    config_text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    config_path = run_dir / "config.json"
    if not config_path.exists() or config_path.read_text() != config_text:
        replace_text(config_path, config_text)
    check_run_data(run_dir, data)  # a resumed or re-evaluated run sees exactly the images it started with
    row = store.get_run(run_id)
    identity = dict(method=cfg.method, variant=cfg.label, dataset=cfg.dataset, protocol=cfg.protocol, seed=cfg.seed,
                    config_json=cfg.to_dict(), config_hash=cfg.config_hash(), dtype=cfg.train.precision,
                    run_dir=str(run_dir.resolve()))
    # code and environment describe the code that trained the weights: written when training (re)starts
    trained_by = dict(code_version=code_version(), packages_json=package_versions(), device=device_name(device))
    world = followers.world
    if world.parallel:  # the training set-up beside the device: N processes, each with its share of the batch
        per_rank = min(cfg.train.batch_size, len(data.train)) // world.size
        trained_by["device"] += f"; {describe(world.size, per_rank, backend_for(device))}"
    if row is None:
        store.upsert_run(run_id, **identity, **trained_by, status="running")
        write_result(store, run_id, run_dir)
    if row and row["status"] == "diverged" and not overwrite:
        return RunResult(run_id, run_dir, "diverged", row["message"])

    seed_everything(cfg.seed)
    method = placed(build_method(cfg, data), cfg, device)
    base = type(method).base_method
    if base is not None:
        state = None
        path = run_checkpoint(cfg, out)
        ckpt = load_checkpoint(path) if path.exists() else {}
        if not ckpt.get("finished"):
            raise _missing_base(cfg, out)
        load_weights(method, ckpt, path)
        parallel = ckpt.get("parallel", [])
    else:
        state = make_state(cfg, method)
        ckpt_path = run_dir / CHECKPOINT
        ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() and not overwrite else None
        if ckpt is not None:
            state.load(ckpt)
        if not state.finished:
            store.set_status(run_id, "running", **trained_by)
            lease.note(event="train", from_step=state.step, **({"processes": world.size} if world.parallel else {}))
            followers.start(ckpt, data)
            try:
                _train(cfg, state, data, device, run_dir, progress, lease.check, world)
            except DivergedError as e:
                store.set_status(run_id, "diverged", str(e), steps=state.step, train_seconds=state.train_seconds)
                write_result(store, run_id, run_dir)
                (run_dir / "diverged.txt").write_text(str(e) + "\n")
                return RunResult(run_id, run_dir, "diverged", str(e))
        store.upsert_run(run_id, steps=state.step, train_seconds=state.train_seconds)
        write_result(store, run_id, run_dir)
        parallel = state.parallel

    method.eval()
    extras = {}
    if state is not None and state.train_seconds > 0:
        extras["train_images_per_s"] = state.images_seen / state.train_seconds
    lease.check()
    evaluate(method, cfg, data, device, store, run_id, run_dir, metrics=metrics, overwrite=overwrite, extras=extras,
             trained=training_provenance(parallel))
    lease.check()
    store.set_status(run_id, "done")
    write_result(store, run_id, run_dir)
    return RunResult(run_id, run_dir, "done")


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


def _train(cfg: RunConfig, state: TrainState, data: ImageData, device, run_dir: Path, progress: bool,
           guard: Callable[[], None] = lambda: None, world: World = SINGLE) -> None:
    """Train to the end. `guard` is called before anything is written (it raises when the run's lease is lost).

    With several processes every rank runs this loop in step: each trains on its shard of every global batch of
    train.batch_size images and DDP averages the gradients; rank 0 alone writes (log, samples, checkpoints), at
    points every rank reaches (on_main), and decides when a timed checkpoint is due."""
    method = state.method
    method.train()
    n = len(data.train)
    bs = min(cfg.train.batch_size, n)
    mine = shard(bs, world)  # this rank's slice of each global batch
    per_epoch = n // bs
    total = per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    setup = [world.size, mine.stop - mine.start]
    if state.parallel[-1:] != [setup]:
        state.parallel.append(setup)
    fixed_z = method.prior.sample(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    log_path = run_dir / "log.jsonl"
    on_main(world, lambda: _truncate_log(log_path, state.step))
    last_ckpt = time.monotonic()
    bar = tqdm(total=total, initial=state.step, desc=cfg.run_id(), disable=not progress or not world.is_main,
               leave=False, dynamic_ncols=True)
    meter = LossMeter()

    def read_losses(flag: bool = False) -> tuple[dict[str, float], bool]:
        # the wait for the device's outstanding work (and the other ranks) happens here: it counts as training time
        t0 = time.perf_counter()
        try:
            return meter.read(world, flag)
        finally:
            state.train_seconds += time.perf_counter() - t0

    def checkpoint() -> None:
        read_losses()  # a checkpoint never holds weights trained on a non-finite loss, of any rank
        ranks = gather_objects({"latent_gen": state.latent_gen.get_state(), "rng": rng_state()}, world) \
            if world.parallel else None

        def write() -> None:
            guard()
            save_checkpoint(state.state_dict(cfg, ranks), run_dir / CHECKPOINT)

        on_main(world, write)

    def write_log(rec: dict[str, Any]) -> None:
        guard()
        log.write(json.dumps(rec) + "\n")
        log.flush()

    state.replicas = data_parallel(method, world, device)
    try:
        with open(log_path, "a") if world.is_main else contextlib.nullcontext() as log:
            while state.step < total:
                order = epoch_order(cfg, n, state.epoch)
                while state.pos < per_epoch and state.step < total:
                    idx = order[state.pos * bs : (state.pos + 1) * bs][mine]
                    t0 = time.perf_counter()
                    x = to_batch(data.train[idx], device, cfg.train.channels_last)
                    meter.add(train_step(state, x, cfg, device), state.step)
                    state.train_seconds += time.perf_counter() - t0
                    state.images_seen += bs
                    state.step += 1
                    state.pos += 1
                    bar.update(1)
                    # several processes agree on timed checkpoints at log lines (rank 0's clock decides)
                    due = time.monotonic() - last_ckpt > cfg.train.ckpt_every_s and world.is_main
                    if state.step % cfg.train.log_every == 0 or state.step == total:
                        # the mean of each loss over the steps since the previous line
                        losses, due = read_losses(due)
                        meter.reset()
                        rec = {"step": state.step, "epoch": state.epoch, **losses,
                               "images_per_s": state.images_seen / max(state.train_seconds, 1e-9)}
                        on_main(world, lambda rec=rec: write_log(rec))
                        bar.set_postfix({k.split("/")[0]: f"{v:.3g}" for k, v in losses.items() if k.endswith("/loss")})
                    elif world.parallel:
                        due = False
                    if state.step % cfg.train.sample_every == 0:
                        path = run_dir / "samples" / f"step_{state.step:07d}.png"
                        on_main(world, lambda path=path: save_samples(method, path, fixed_z, device, cfg.train.precision))
                    if due:
                        checkpoint()
                        last_ckpt = time.monotonic()
                if state.pos >= per_epoch:
                    state.epoch += 1
                    state.pos = 0
                    checkpoint()
                    last_ckpt = time.monotonic()
            bar.close()
            on_main(world, lambda: save_samples(method, run_dir / "samples" / "final.png", fixed_z, device,
                                                cfg.train.precision))
            state.finished = True
            checkpoint()
    finally:
        state.replicas = {}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so no step is logged twice, and a line
    cut short by a kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if json.loads(line)["step"] <= step:
                keep.append(line)
    text = "".join(line + "\n" for line in keep)
    if text != path.read_text():
        replace_text(path, text)


class MissingBaseRunError(UsageError):
    """A refinement method (e.g. "faae+sc") whose base method has no finished run to reuse."""


def _missing_base(cfg: RunConfig, out: Path) -> MissingBaseRunError:
    base = METHODS.get(cfg.method).base_method
    return MissingBaseRunError(
        f"{cfg.method} reuses the trained {base} model and does not train: run `python -m bench run --methods "
        f"{base} --dataset {cfg.dataset} --protocol {cfg.protocol} --seeds {cfg.seed} --out {out}` (with the same "
        f"--set overrides) first, or list {base} before {cfg.method} in --methods "
        f"(no finished checkpoint at {run_checkpoint(cfg, out)})")


def check_bases(cfgs: list[RunConfig], out: Path) -> None:
    """Before any training: every refinement's base run is finished on disk or scheduled earlier."""
    scheduled: set[str] = set()
    for cfg in cfgs:
        if METHODS.get(cfg.method).base_method is not None:
            path = run_checkpoint(cfg, out)
            done = path.exists() and load_checkpoint(path).get("finished")
            if not done and path.parent.name not in scheduled:
                raise _missing_base(cfg, out)
        scheduled.add(cfg.run_id())


def use_all_cores() -> None:
    """Every core for intra-op work, unless OMP_NUM_THREADS says otherwise (e.g. two jobs sharing a CPU)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


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


def execute(cfgs: list[RunConfig], out: Path, data_root: str | None, device: torch.device,
            metrics: list[str] | None = None, overwrite: bool = False, progress: bool = True,
            world: World = SINGLE) -> list[RunResult]:
    """Train and evaluate the runs in order. Under torchrun (`world` of several processes, in a process group) the
    one run is trained by every rank and rank 0 alone returns its result; another rank returns its own part."""
    check_data_parallel(cfgs, world)
    use_all_cores()
    if not world.is_main:
        cfg = cfgs[0]
        return [follow(cfg, out, load_dataset(cfg.dataset, data_root, cfg.data), device, world)]
    followers = Followers(world)
    try:
        return _execute(cfgs, out, data_root, device, metrics, overwrite, progress, followers)
    finally:
        followers.release()


def _execute(cfgs: list[RunConfig], out: Path, data_root: str | None, device: torch.device,
             metrics: list[str] | None, overwrite: bool, progress: bool, followers: Followers) -> list[RunResult]:
    check_bases(cfgs, out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "results.db")
    results: list[RunResult] = []
    cache: dict[tuple, ImageData] = {}
    for cfg in cfgs:
        base = METHODS.get(cfg.method).base_method
        if base is not None:  # a refinement waits for a base run that this command did not finish
            base_id = run_checkpoint(cfg, out).parent.name
            prior = next((r for r in results if r.run_id == base_id and r.status in ("skipped", "failed")), None)
            if prior is not None:
                run_dir = out / "runs" / cfg.run_id()
                results.append(RunResult(cfg.run_id(), run_dir, prior.status, f"its base run {base_id} was "
                                         f"{prior.status}: {prior.message}"))
                continue
        key = (cfg.dataset, cfg.data)
        if key not in cache:
            cache[key] = load_dataset(cfg.dataset, data_root, cfg.data)
        results.append(run_one(cfg, out, store, cache[key], device, metrics, overwrite, progress, followers))
    return results
