"""The entry point of `bench tune`: this process and `workers - 1` local processes share every method's study, then
the best settings are written as a variants file."""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy as sa
import torch

from bench.core.distributed import available_cores
from bench.core.errors import UsageError
from methods.plugins import load_plugins

from .study import Log, TuneSpec, open_storage, storage_url, work
from .variants import write_variants


@dataclass
class TuneResult:
    studies: list[optuna.Study]
    variants: Path


def default_variants_path(spec: TuneSpec) -> Path:
    return Path(spec.out) / f"tuned-{spec.dataset}-{spec.protocol}.toml"


def _threads(workers: int) -> None:
    """The cores shared between the workers, unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, available_cores() // workers))


def _worker(spec: TuneSpec, workers: int) -> None:
    load_plugins(list(spec.plugins))
    _threads(workers)
    work(spec, log=lambda line: print(line, flush=True))


def tune(spec: TuneSpec, workers: int = 1, variants: Path | None = None, log: Log = print) -> TuneResult:
    """Run every method's study to its budget with `workers` processes (this one included), then write the variants
    file. Rerunning continues the studies; an interrupted trial is run again."""
    if spec.trials < 1 or workers < 1 or spec.heartbeat < 1:
        raise UsageError("--trials, --workers and --heartbeat must be at least 1")
    if not spec.seeds:
        raise UsageError("--seeds is empty")
    _threads(workers)
    open_storage(spec)  # created once before the workers open it together
    ctx = mp.get_context("spawn")
    others = [ctx.Process(target=_worker, args=(spec, workers), daemon=True) for _ in range(workers - 1)]
    for p in others:
        p.start()
    try:
        studies = work(spec, log)
    finally:
        for p in others:
            p.join()
    failed = [p.exitcode for p in others if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} of the {workers - 1} other worker processes failed (exit codes {failed})")
    shown = sa.engine.make_url(storage_url(spec)).render_as_string(hide_password=True)
    path = write_variants(variants or default_variants_path(spec), studies, shown, spec.protocol, spec.dataset)
    return TuneResult(studies, path)
