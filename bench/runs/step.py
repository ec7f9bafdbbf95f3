"""One training step. The step knows no method: a method lists its phases; for each phase every other parameter
is frozen, the method gives that phase's losses, and the step owns backward, the optimiser steps and the schedules.
Losses stay on the device between log lines (LossMeter)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from methods import Method, StepContext

from ..core.config import RunConfig
from ..core.device import autocast
from ..core.distributed import (
    SINGLE,
    World,
    all_reduce,
    any_rank,
)
from .state import TrainState, optimizer_keys


class DivergedError(RuntimeError):
    pass

def to_batch(x_uint8: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x_uint8.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class BatchSource:
    """Where training batches are gathered. On a GPU the uint8 training split moves there once when it takes under
    a quarter of the free memory (CIFAR-10's 50,000 images are 150 MiB), and each batch is gathered on the device by
    an index tensor that lives there too: no host work or copy per step. Otherwise batches are gathered on the
    host, into pinned memory on CUDA so that the copy runs asynchronously."""

    def __init__(self, images: torch.Tensor, device: torch.device):
        self.device = device
        self.images = images
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if images.numel() * images.element_size() < free // 4:
                self.images = images.to(device)

    def order(self, perm: torch.Tensor) -> torch.Tensor:
        """An epoch's order where the images are (one copy per epoch)."""
        return perm.to(self.images.device)

    def batch(self, idx: torch.Tensor, channels_last: bool) -> torch.Tensor:
        x = self.images[idx]
        if x.device != self.device and self.device.type == "cuda":
            x = x.pin_memory()
        return to_batch(x, self.device, channels_last)

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
