"""The training loop: batches in the epoch's order, a step each, a log line of interval means every
train.log_every steps, sample grids, timed and end-of-epoch checkpoints, the same on every rank under torchrun."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import save_image
from tqdm import tqdm

from methods import Method

from ..core.checkpoint import save_checkpoint
from ..core.config import RunConfig
from ..core.data import ImageData
from ..core.device import autocast, training_math
from ..core.distributed import (
    SINGLE,
    World,
    gather_objects,
    shard,
)
from ..core.layout import RunDir
from ..core.tempfiles import replace_text
from .parallel import data_parallel, on_main
from .state import TrainState, epoch_order, rng_state
from .step import BatchSource, LossMeter, train_step


@torch.no_grad()
def save_samples(method: Method, path: Path, z: torch.Tensor, device, precision: str) -> None:
    was_training = method.training
    method.eval()
    with autocast(device, precision):
        x = method.decode(z.to(device)).float()
    method.train(was_training)
    save_image(x.cpu(), path, nrow=8)

def train(cfg: RunConfig, state: TrainState, data: ImageData, device, run_dir: Path, progress: bool,
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
    files = RunDir(run_dir)
    log_path = files.log
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
            save_checkpoint(state.state_dict(cfg, ranks), files.checkpoint)

        on_main(world, write)

    def write_log(rec: dict[str, Any]) -> None:
        guard()
        log.write(json.dumps(rec) + "\n")
        log.flush()

    state.replicas = data_parallel(method, world, device)
    source = BatchSource(data.train, device)
    try:
        with (open(log_path, "a") if world.is_main else contextlib.nullcontext() as log,
              training_math(device, cfg.train.precision, cfg.train.deterministic)):
            while state.step < total:
                order = source.order(epoch_order(cfg, n, state.epoch))
                while state.pos < per_epoch and state.step < total:
                    idx = order[state.pos * bs : (state.pos + 1) * bs][mine]
                    t0 = time.perf_counter()
                    x = source.batch(idx, cfg.train.channels_last)
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
                        path = files.samples / f"step_{state.step:07d}.png"
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
            on_main(world, lambda: save_samples(method, files.samples / "final.png", fixed_z, device,
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
