"""Sweeps: every run of a grid as an independent job through submitit, on Slurm or in local processes.

Each job is one call of bench.runs.execute.execute with one config, so a job does exactly what `bench run` does for
that run: its lease makes a run already held by a live process a skip, and an interrupted run resumes from its
last.pt. Refinements (methods with a base_method, e.g. faae+sc) start after their base run: locally they are
submitted once the base's job has ended, on Slurm they are submitted at once with a dependency on the base's job.

The sweep writes <out>/sweep/state.json (run ids, job ids, last known status) so that `bench sweep --status`
can tell later what became of each run, from that file, the job states submitit reports and the results store.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
import torch

from methods import METHODS
from methods.plugins import load_plugins
from methods.trained import run_checkpoint
from metrics import select_metrics

from ..core.config import RunConfig
from ..core.device import resolve_device
from ..core.distributed import available_cores
from ..core.errors import UsageError
from ..core.layout import LEASE, OutDir
from ..core.lease import lease_timeout, read_lease, stale_reason
from ..core.store import Store
from ..runs.execute import check_bases, execute
from .state import (
    FINISHED,
    SLURM_WAITING,
    SweepOptions,
    SweepRun,
    check_options,
    counts_line,
    job_gpus,
    job_outcome,
    sweep_dir,
    visible_gpus,
    write_state,
)


# --- the job ---------------------------------------------------------------------------------------------
class RunJob(submitit.helpers.Checkpointable):
    """One run in its own process: bench.runs.execute.execute on its config.

    Checkpointable: when Slurm preempts the job or its time runs out (locally: --time-min), submitit calls
    checkpoint(), which resubmits this same call (Checkpointable's own checkpoint); the requeued job takes
    the run's lease again and resumes from last.pt."""

    def __init__(self, threads: int, plugins: list[str], gpus: list[str] | None = None):
        self.threads = threads
        self.plugins = plugins
        self.gpus = gpus  # a local job's own GPUs (None: as given, e.g. by Slurm)

    def __call__(self, cfg: dict[str, Any], out: str, data_root: str | None, device: str,
                 metrics: list[str] | None, overwrite: bool) -> dict[str, str]:
        # before the first parallel op; the variable also reaches anything the run starts
        os.environ["OMP_NUM_THREADS"] = str(self.threads)
        if self.gpus is not None:  # as its setup exported it before Python started; read when CUDA initialises
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        torch.set_num_threads(self.threads)
        load_plugins(self.plugins)  # methods of plugins, in this process too
        config = RunConfig.from_dict(cfg)
        r = execute([config], Path(out), data_root, resolve_device(device), metrics, overwrite, progress=False)[0]
        return {"run_id": r.run_id, "status": r.status, "message": r.message}


# --- the sweep -------------------------------------------------------------------------------------------
def already_done(store: Store | None, cfg: RunConfig, metrics: list[str] | None) -> bool:
    """Done in the store with every metric asked for: its job would load the model and find nothing to do."""
    if store is None:
        return False
    row = store.get_run(cfg.run_id())
    if row is None or row["status"] != "done":
        return False
    return set(select_metrics(metrics, cfg.eval.pretrained)) <= store.metrics_done(cfg.run_id())


def holder(run_dir: Path) -> str | None:
    """Who holds the run's lease while that process lives (bench.core.lease), else None."""
    path = run_dir / LEASE
    if not path.exists():
        return None
    info = read_lease(path)
    if stale_reason(path, info, lease_timeout()) is not None:
        return None
    return info.describe() if info else "a process still writing its lease"


def make_executor(folder: Path, opts: SweepOptions, device: str) -> submitit.AutoExecutor:
    """AutoExecutor (Slurm where `srun` exists, local processes otherwise) with the options as its parameters."""
    if opts.executor == "slurm" and submitit.AutoExecutor.which() != "slurm":
        raise UsageError("--executor slurm needs Slurm (no `srun` on PATH); valid here: auto, local")
    first: list[str] = []  # a local job's GPUs: the first slot's
    if opts.executor == "local" or (opts.executor == "auto" and submitit.AutoExecutor.which() == "local"):
        try:  # the jobs run on this machine: a device it lacks is a usage error now, not a failure per job
            resolve_device(device)
        except (ValueError, RuntimeError) as e:
            raise UsageError(str(e)) from None
        first = job_gpus(0, *local_gpus(opts, device))  # a bad --gpus-per-run too, before anything is written
    executor = submitit.AutoExecutor(folder / "jobs", cluster=None if opts.executor == "auto" else opts.executor)
    threads = job_threads(executor.cluster, opts)
    params: dict[str, Any] = dict(name="aegan-bench", timeout_min=opts.time_min, cpus_per_task=opts.cpus_per_run,
                                  gpus_per_node=opts.gpus_per_run, slurm_partition=opts.partition,
                                  slurm_array_parallelism=opts.array_parallelism)
    # the variables are set for the job's process before Python starts, and again by RunJob before torch works
    params[f"{executor.cluster}_setup"] = job_setup(threads, None)
    if executor.cluster == "local":
        # submitit would give every local job GPUs 0..n-1: its setup exports its own set instead (here the first
        # slot's, for a lone job; a sweep sets each job's)
        params.update(gpus_per_node=0, local_setup=job_setup(threads, first))
    executor.update_parameters(**params)
    return executor


def job_setup(threads: int, gpus: list[str] | None) -> list[str]:
    """The shell lines a job's setup runs before its Python: its threads and, locally, its GPUs (none: none)."""
    lines = [f"export OMP_NUM_THREADS={threads}"]
    if gpus is not None:
        lines.append(f"export CUDA_VISIBLE_DEVICES={shlex.quote(','.join(gpus))}")
    return lines


def local_gpus(opts: SweepOptions, device: str) -> tuple[int, list[str]]:
    """The GPUs per local job (none on the CPU; --gpus-per-run, else 1: a job trains on one) and the GPUs this
    process sees, which the jobs share out (bench.sweep.state.job_gpus)."""
    dev = None if device == "auto" else torch.device(device)
    if dev is not None and dev.type == "cpu":
        return 0, []
    visible = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    if dev is not None and dev.index is not None:
        raise UsageError(f"--device {device} names one GPU, but each local job sees only its own: pass --device cuda "
                         "(or auto) with --gpus-per-run; CUDA_VISIBLE_DEVICES chooses the GPUs a sweep uses")
    per_run = (1 if visible else 0) if opts.gpus_per_run is None else opts.gpus_per_run
    if per_run == 0 and dev is not None:
        raise UsageError(f"--device {device} with --gpus-per-run 0: the jobs would see no GPU; valid: --gpus-per-run "
                         f"1 to {len(visible)}")
    job_gpus(0, per_run, visible)  # more per run than there are: a usage error now
    return per_run, visible


def job_threads(cluster: str, opts: SweepOptions) -> int:
    """Intra-op threads of one job: the cores shared out among the local workers, or the CPUs Slurm gives it."""
    if cluster == "local":
        return max(1, available_cores() // opts.workers)
    return opts.cpus_per_run or 1


class Sweep:
    def __init__(self, cfgs: list[RunConfig], out: Path, data_root: str | None, device: str,
                 metrics: list[str] | None, overwrite: bool, plugins: list[str], opts: SweepOptions,
                 log: Callable[[str], None] = print):
        self.out = out
        self.opts = opts
        self.log = log
        self.call_args = (str(out), data_root, device, metrics, overwrite)
        self.plugins = plugins
        unique: dict[str, RunConfig] = {}
        for cfg in cfgs:
            unique.setdefault(cfg.run_id(), cfg)
        self.cfgs = unique
        self.runs: dict[str, SweepRun] = {}
        for rid, cfg in unique.items():
            base = METHODS.get(cfg.method).base_method
            base_id = run_checkpoint(cfg, out).parent.name if base is not None else None
            self.runs[rid] = SweepRun(rid, cfg.label, base_id if base_id in unique else None)
        self.jobs: dict[str, submitit.Job] = {}
        self.slots: dict[str, int] = {}  # a local job's set of GPUs (job_gpus' index)
        self.gpus: tuple[int, list[str]] = (0, [])  # local: GPUs per job, GPUs this process sees
        self.started = time.time()
        self.executor: submitit.AutoExecutor | None = None

    # --- state file ----------------------------------------------------------------------------------
    def save(self, finished: bool = False) -> None:
        assert self.executor is not None
        write_state(self.out, self.executor.cluster, self.executor.folder, self.started, list(self.runs.values()),
                    finished)

    # --- submission ----------------------------------------------------------------------------------
    def _submit(self, run_ids: list[str]) -> None:
        assert self.executor is not None
        threads = job_threads(self.executor.cluster, self.opts)
        local = self.executor.cluster == "local"
        gpus: list[list[str] | None] = [None] * len(run_ids)
        if not local:
            fn = RunJob(threads, self.plugins)
            with self.executor.batch():  # one job array (array parallelism applies)
                jobs = [self.executor.submit(fn, self.cfgs[rid].to_dict(), *self.call_args) for rid in run_ids]
        else:  # one at a time: each job's setup exports its own GPUs, the set fewest running jobs have
            per_run, visible = self.gpus
            load = [0] * (len(visible) // per_run if per_run else 1)
            for rid, s in self.slots.items():
                load[s] += self.runs[rid].status == "running"
            jobs = []
            for i, rid in enumerate(run_ids):
                self.slots[rid] = load.index(min(load))
                load[self.slots[rid]] += 1
                gpus[i] = job_gpus(self.slots[rid], per_run, visible)
                self.executor.update_parameters(local_setup=job_setup(threads, gpus[i]))
                fn = RunJob(threads, self.plugins, gpus[i])
                jobs.append(self.executor.submit(fn, self.cfgs[rid].to_dict(), *self.call_args))
        for rid, job, g in zip(run_ids, jobs, gpus):
            self.jobs[rid] = job
            self.runs[rid].job_id = job.job_id
            self.runs[rid].status = "running" if local else "queued"
            self.log(f"{rid}: submitted as job {job.job_id}" + (f" (GPU {','.join(g)})" if g else ""))

    def _base_blocks(self, run: SweepRun) -> str | None:
        """None when the run may start; "wait" while its base is unfinished; otherwise why it never can."""
        if run.base is None:
            return None
        base = self.runs[run.base]
        if base.status in FINISHED:
            return None
        if base.status in ("queued", "running"):
            return "wait"
        return f"its base run {base.run_id} was {base.status}: {base.message}"

    def _held(self, run: SweepRun) -> bool:
        """Whether another live process (e.g. a job of an interrupted earlier sweep) holds the run: then it
        waits instead of being given a job that would skip it; once released it may be done already."""
        who = holder(OutDir(self.out).run(run.run_id).path)
        if who is not None:
            if not run.message:
                self.log(f"{run.run_id}: waiting, another process holds it: {who}")
            run.message = f"waiting for {who}"
            return True
        if run.message:  # it was held: finished by its holder?
            run.message = ""
            db = OutDir(self.out).store
            store = Store(db, readonly=True) if db.is_file() else None
            if not self.call_args[-1] and already_done(store, self.cfgs[run.run_id], self.call_args[3]):
                run.status, run.message = "done", "finished by another process"
                return True
        return False

    def _submit_ready(self) -> None:
        """Locally: start queued runs while fewer than --workers jobs run, each refinement after its base."""
        active = sum(1 for rid in self.jobs if self.runs[rid].status == "running")
        # runs that live processes of an earlier, interrupted sweep still train use the workers' cores too
        active += sum(1 for r in self.runs.values() if r.status == "queued" and r.job_id is None and self._held(r))
        ready = []
        for run in self.runs.values():
            if run.status != "queued" or run.job_id is not None or active + len(ready) >= self.opts.workers:
                continue
            block = self._base_blocks(run)
            if block is None:
                if not self._held(run):
                    ready.append(run.run_id)
            elif block != "wait":
                run.status, run.message = "skipped", block
        if ready:
            self._submit(ready)

    def _submit_slurm(self) -> None:
        """On Slurm everything is submitted now: bases as one array, refinements as a second array that
        starts after the bases' array has ended (afterany: a refinement whose base failed fails with a message
        naming it, rather than waiting for ever)."""
        assert self.executor is not None
        first = [r.run_id for r in self.runs.values() if r.status == "queued" and r.base is None]
        second = [r.run_id for r in self.runs.values() if r.status == "queued" and r.base is not None]
        if first:
            self._submit(first)
        if second:
            arrays = sorted({self.jobs[r.base].job_id.split("_")[0] for r in map(self.runs.get, second)
                             if r.base in self.jobs})
            if arrays:
                self.executor.update_parameters(slurm_dependency="afterany:" + ":".join(arrays))
            self._submit(second)

    # --- waiting -------------------------------------------------------------------------------------
    def _poll(self) -> None:
        for rid, job in self.jobs.items():
            run = self.runs[rid]
            if run.status not in ("queued", "running"):
                continue
            if job.done():
                run.status, run.message = job_outcome(job)
                self.log(f"{rid}: {run.status}" + (f" ({run.message})" if run.message else ""))
            elif self.executor is not None and self.executor.cluster != "local":
                run.status = "queued" if job.state.upper().split()[0] in SLURM_WAITING else "running"

    def run(self) -> list[SweepRun]:
        db = OutDir(self.out).store
        store = Store(db, readonly=True) if db.is_file() else None
        overwrite = self.call_args[-1]
        for rid, cfg in self.cfgs.items():
            if not overwrite and already_done(store, cfg, self.call_args[3]):
                self.runs[rid].status = "already done"
        self.executor = make_executor(sweep_dir(self.out), self.opts, self.call_args[2])
        sweep_dir(self.out).mkdir(parents=True, exist_ok=True)
        if self.executor.cluster == "local":
            self.gpus = local_gpus(self.opts, self.call_args[2])
            per_run, visible = self.gpus
            if per_run and self.opts.workers > len(visible) // per_run:
                self.log(f"{self.opts.workers} workers, {len(visible) // per_run} set(s) of {per_run} GPU(s): "
                         "jobs share them, each taking the least used")
        self.save()
        if self.executor.cluster != "local":
            self._submit_slurm()
        last = ""
        try:
            while True:
                if self.executor.cluster == "local":
                    self._submit_ready()
                self._poll()
                line = counts_line(list(self.runs.values()))
                if line != last:  # a line per change, not per poll
                    self.save()
                    self.log(f"[{time.time() - self.started:6.0f} s] {line}")
                    last = line
                if not any(r.status in ("queued", "running") for r in self.runs.values()):
                    break
                time.sleep(self.opts.poll_s)
        finally:
            self.save(finished=True)
        return list(self.runs.values())


def run_sweep(cfgs: list[RunConfig], out: str | Path, data_root: str | None = None, device: str = "auto",
              metrics: list[str] | None = None, overwrite: bool = False, plugins: list[str] | None = None,
              opts: SweepOptions | None = None, log: Callable[[str], None] = print) -> list[SweepRun]:
    """Run every config of the grid as its own submitit job and wait for them all; returns each run's verdict."""
    opts = opts or SweepOptions()
    check_options(opts)
    out = Path(out)
    check_bases(cfgs, out)  # a refinement needs its base finished on disk or earlier in the grid
    return Sweep(cfgs, out, data_root, device, metrics, overwrite, list(plugins or []), opts, log).run()


