"""The state of a run: its training state (networks, optimisers, schedules, latent stream, position; what a
checkpoint holds), every global RNG's state, seeding, the epoch's shuffle, and what a run ends as (RunResult)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods import Method, Phase

from ..core.config import RunConfig
from ..core.distributed import (
    World,
    rank_seed,
)


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
        restore_latent_stream(self.latent_gen, ckpt["latent_gen"], ckpt["config"]["seed"], ckpt["step"])
        set_rng_state(ckpt["rng"])
        for k in ("step", "epoch", "pos", "finished", "train_seconds", "images_seen"):
            setattr(self, k, ckpt[k])
        self.parallel = [list(p) for p in ckpt.get("parallel", [])]  # absent from checkpoints before DDP

    def rank_streams(self, ckpt: dict[str, Any] | None, seed: int, world: World) -> None:
        """The latent generator and global RNGs of a rank > 0: its own from the checkpoint of a run trained by as
        many processes, else fresh streams derived from (seed, rank, step), never another rank's."""
        entries = (ckpt or {}).get("ranks") or []
        if world.rank < len(entries):
            restore_latent_stream(self.latent_gen, entries[world.rank]["latent_gen"], seed, self.step, world.rank)
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
        # this process's own GPU only: under torchrun each process has one, and a checkpoint written by N
        # processes or with N visible GPUs resumes with any number (own_cuda_state)
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def own_cuda_state(saved: list[torch.Tensor], device_index: int) -> torch.Tensor | None:
    """The CUDA RNG state a process on GPU `device_index` resumes with: the one saved for that GPU where the
    checkpoint holds one per visible GPU (written before a process saved only its own), else the first (its
    own process's), None when none was saved (trained without CUDA)."""
    if not saved:
        return None
    return saved[device_index] if device_index < len(saved) else saved[0]


def restore_latent_stream(gen: torch.Generator, saved: torch.Tensor, seed: int, step: int, rank: int = 0) -> None:
    """The latent generator from a checkpoint. Its state is device-specific (a CPU generator's is 5 KB, a CUDA
    one's 16 bytes): a run resumed on another kind of device continues with a fresh stream derived from
    (seed, rank, step), as a new rank would; the same device continues the exact stream."""
    try:
        gen.set_state(saved)
    except (RuntimeError, ValueError):
        gen.manual_seed(rank_seed(seed, rank, step))


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if torch.cuda.is_available() and (state := own_cuda_state(rng["cuda"], torch.cuda.current_device())) is not None:
        torch.cuda.set_rng_state(state)


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
    # the latent stream lives on the training device, where every step draws its codes (no host round trip)
    device = next(method.parameters()).device
    return TrainState(method, optimizers, schedulers, torch.Generator(device=device).manual_seed(cfg.seed))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_order(cfg: RunConfig, n: int, epoch: int) -> torch.Tensor:
    """The shuffle of one epoch depends on (seed, epoch) only, so a resumed epoch sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    status: str
    message: str = ""
