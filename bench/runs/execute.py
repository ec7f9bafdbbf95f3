"""Runs from their configs to stored results: claim a run (its lease), train or resume it, evaluate what is not
stored, record failures without losing results; refinements reuse their base run's finished checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch

from methods import METHODS
from methods.trained import build_method, load_weights, placed, run_checkpoint
from metrics import evaluate

from ..core.checkpoint import CheckpointError, as_no_space, load_checkpoint
from ..core.config import RunConfig
from ..core.console import fit
from ..core.data import ImageData, check_run_data, load_dataset
from ..core.device import device_name
from ..core.distributed import (
    SINGLE,
    World,
    available_cores,
    backend_for,
    describe,
    training_provenance,
)
from ..core.errors import UsageError
from ..core.layout import OutDir, RunDir
from ..core.lease import Held, Lease, LeaseLost, acquire
from ..core.paths import OddFileError, check_regular, display
from ..core.provenance import code_version, package_versions
from ..core.result_file import write_result
from ..core.store import STORE_ERRORS, Store
from ..core.tempfiles import remove_orphans, replace_text
from .followers import Followers, follow
from .loop import train
from .parallel import check_data_parallel
from .state import RunResult, make_state, seed_everything
from .step import DivergedError


def run_one(cfg: RunConfig, out: Path, store: Store, data: ImageData, device: torch.device,
            metrics: list[str] | None = None, overwrite: bool = False, progress: bool = True,
            followers: Followers | None = None) -> RunResult:
    """Train (or resume) one run, then evaluate what is not yet stored. Never loses stored results.

    The run is first claimed (bench.core.lease): a run that another live process holds is skipped. A damaged
    checkpoint or a full disk fails this run only, with a message saying what to do, and the store says so.
    Under torchrun this is rank 0's part; `followers` are the other ranks, which train with it."""
    followers = followers or Followers(SINGLE)
    run_id = cfg.run_id()
    files = OutDir(out).run(run_id)
    run_dir = files.path
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise OddFileError(f"{display(run_dir)} is a file, not a run directory; move it away and rerun")
        files.samples.mkdir(parents=True, exist_ok=True)
        claim = acquire(files.lease)
    except OddFileError as e:  # a directory or link where the lease belongs: this run fails, in one line; the
        return RunResult(run_id, run_dir, "failed", str(e))  # store is left alone (the run was not claimed)
    except OSError as e:
        if (err := as_no_space(e, files.lease)) is None:
            raise
        return _failed(store, run_id, run_dir, err)
    if isinstance(claim, Held):
        return RunResult(run_id, run_dir, "skipped", f"another process holds it: {claim.describe()}")
    with claim as lease:
        if lease.took_over:
            print(fit(f"{run_id}: taking over an abandoned run ({lease.took_over})"), file=sys.stderr)
        # temporaries of earlier holders (killed, or out of disk space); ours have not begun
        remove_orphans(run_dir, files.samples)
        try:
            # before training, not at its first checkpoint or its result file
            check_regular(files.checkpoint, "a checkpoint file")
            check_regular(files.result, "a result file")
            return _run_claimed(cfg, run_dir, store, data, device, lease, metrics, overwrite, progress, followers)
        except LeaseLost as e:  # another process has the run now: leave it the store and the files
            return RunResult(run_id, run_dir, "skipped", str(e))
        except (CheckpointError, OddFileError, OSError) as e:
            err = e if isinstance(e, CheckpointError | OddFileError) else as_no_space(e, run_dir)
            if err is None:
                raise
            return _failed(store, run_id, run_dir, err)

def _failed(store: Store, run_id: str, run_dir: Path, err: Exception) -> RunResult:
    """A run that failed without a traceback (damaged checkpoint, full disk): the store says so."""
    # the store may sit on the same full disk; the result file's place may hold a directory
    with contextlib.suppress(*STORE_ERRORS, OSError, OddFileError):
        if store.get_run(run_id) is not None:
            store.set_status(run_id, "failed", str(err))
            write_result(store, run_id, run_dir)
    return RunResult(run_id, run_dir, "failed", str(err))


def _run_claimed(cfg: RunConfig, run_dir: Path, store: Store, data: ImageData, device: torch.device, lease: Lease,
                 metrics: list[str] | None, overwrite: bool, progress: bool, followers: Followers) -> RunResult:
    run_id = cfg.run_id()
    files = RunDir(run_dir)
    out = files.out.path
    config_text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    config_path = files.config
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
        followers.release()  # a refinement does not train: the other ranks stop waiting now
        state = None
        path = run_checkpoint(cfg, out)
        ckpt = load_checkpoint(path) if path.exists() else {}
        if not ckpt.get("finished"):
            raise _missing_base(cfg, out)
        load_weights(method, ckpt, path)
        parallel = ckpt.get("parallel", [])
    else:
        state = make_state(cfg, method)
        ckpt_path = files.checkpoint
        ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() and not overwrite else None
        if ckpt is not None:
            state.load(ckpt)
        if not state.finished:
            store.set_status(run_id, "running", **trained_by)
            lease.note(event="train", from_step=state.step, **({"processes": world.size} if world.parallel else {}))
            followers.start(ckpt, data)
            try:
                train(cfg, state, data, device, run_dir, progress, lease.check, world)
            except DivergedError as e:
                store.set_status(run_id, "diverged", str(e), steps=state.step, train_seconds=state.train_seconds)
                write_result(store, run_id, run_dir)
                files.diverged.write_text(str(e) + "\n")
                return RunResult(run_id, run_dir, "diverged", str(e))
        store.upsert_run(run_id, steps=state.step, train_seconds=state.train_seconds)
        write_result(store, run_id, run_dir)
        parallel = state.parallel

    # the other ranks never wait through the evaluation (a rank in a collective that long would be killed by
    # NCCL's watchdog): told at the start of training, or released here (a finished run)
    followers.release()
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
    """Every core this process may use (its CPU affinity) for intra-op work, unless OMP_NUM_THREADS says otherwise
    (e.g. two jobs sharing a CPU)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(available_cores())

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
    store = Store(OutDir(out).store)
    results: list[RunResult] = []
    cache: dict[tuple, ImageData] = {}
    for cfg in cfgs:
        base = METHODS.get(cfg.method).base_method
        if base is not None:  # a refinement waits for a base run that this command did not finish
            base_id = run_checkpoint(cfg, out).parent.name
            prior = next((r for r in results if r.run_id == base_id and r.status in ("skipped", "failed")), None)
            if prior is not None:
                run_dir = OutDir(out).run(cfg.run_id()).path
                results.append(RunResult(cfg.run_id(), run_dir, prior.status, f"its base run {base_id} was "
                                         f"{prior.status}: {prior.message}"))
                continue
        key = (cfg.dataset, cfg.data)
        if key not in cache:
            cache[key] = load_dataset(cfg.dataset, data_root, cfg.data)
        results.append(run_one(cfg, out, store, cache[key], device, metrics, overwrite, progress, followers))
    return results
