"""The start of data-parallel training: rank 0 tells the other ranks whether it trains the run and from which
checkpoint (Followers); a rank other than 0 then trains in step with it and writes nothing (follow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from methods.trained import build_method, placed

from ..core.config import RunConfig
from ..core.data import DatasetError, ImageData
from ..core.distributed import (
    World,
    any_rank,
    broadcast_object,
)
from ..core.layout import OutDir
from .loop import train
from .parallel import StoppedByMain
from .state import RunResult, make_state, seed_everything
from .step import DivergedError


class Followers:
    """Rank 0's side of the start of data-parallel training. The other ranks wait (in `follow`) to learn whether
    rank 0 trains the run and from which checkpoint; they are told exactly once: `start` when rank 0 is about to
    train, else `release` (also after an error), so that none waits for a message that never comes. Rank 0 releases
    them before it evaluates (a refinement, a finished run): a rank waiting in a collective that long would be killed
    by NCCL's watchdog."""

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
    run_dir = OutDir(out).run(run_id).path
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
        train(cfg, state, data, device, run_dir, progress=False, world=world)
    except (DivergedError, StoppedByMain) as e:  # rank 0 records and reports it
        return RunResult(run_id, run_dir, "diverged" if isinstance(e, DivergedError) else "stopped", str(e))
    return RunResult(run_id, run_dir, "done")
