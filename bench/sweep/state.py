"""The light half of sweeps (bench.sweep.jobs): their options, the state file, the verdict of each run, and what
became of the runs later (`bench sweep --status`).

Kept apart from bench.sweep.jobs, which imports the engine (torch, the metrics), so that `--status` and the
checks of the flags start in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import submitit
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..core.errors import UsageError
from ..core.layout import OutDir
from ..core.paths import display
from ..core.schema import Name, first_problem
from ..core.store import Store
from ..core.tempfiles import HOST, pid_alive, replace_text

EXECUTORS = ("auto", "local", "slurm")
STATE = "state.json"
#: the verdicts of a run; a sweep succeeds when every run is done or already done
STATUSES = ("queued", "running", "done", "already done", "failed", "skipped")
FINISHED = ("done", "already done")
#: Slurm job states of a job that waits for a node (the rest of the unfinished ones count as running)
SLURM_WAITING = ("PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "UNKNOWN")


@dataclass(frozen=True)
class SweepOptions:
    """How the jobs run: the submitit executor and its resources (the Slurm ones are ignored locally)."""

    executor: str = "auto"
    workers: int = 1  # local processes at a time
    time_min: int = 720  # a job's time limit; at the limit it is checkpointed and requeued
    partition: str | None = None
    gpus_per_run: int | None = None
    cpus_per_run: int | None = None
    array_parallelism: int | None = None
    poll_s: float = 1.0


def check_options(opts: SweepOptions) -> None:
    if opts.executor not in EXECUTORS:
        raise UsageError(f"unknown --executor {opts.executor!r}; valid: {', '.join(EXECUTORS)}")
    for name, value in (("--workers", opts.workers), ("--time-min", opts.time_min),
                        ("--gpus-per-run", opts.gpus_per_run), ("--cpus-per-run", opts.cpus_per_run),
                        ("--array-parallelism", opts.array_parallelism)):
        minimum = 0 if name == "--gpus-per-run" else 1
        if value is not None and value < minimum:
            raise UsageError(f"{name} must be an integer >= {minimum}, got {value}")


def visible_gpus(cuda_visible: str | None, count: int) -> list[str]:
    """The GPUs a process sees, named as a child's CUDA_VISIBLE_DEVICES names them: the entries of its own
    CUDA_VISIBLE_DEVICES (indices, UUIDs or MIG ids) when set, else 0..count-1; `count` is what CUDA found."""
    if cuda_visible is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in cuda_visible.split(",") if g.strip()][:count]


def job_gpus(index: int, gpus_per_run: int, visible: Sequence[str]) -> list[str]:
    """The GPUs of the local job in slot `index`: `visible` cut into disjoint sets of `gpus_per_run`, taken
    round-robin by the slots (concurrent jobs share a set only when there are more of them than sets)."""
    if gpus_per_run == 0:
        return []
    if gpus_per_run > len(visible):
        shown = f" ({','.join(visible)})" if visible else ""
        raise UsageError(f"--gpus-per-run {gpus_per_run}, but this process sees {len(visible)} GPU(s){shown}; "
                         f"valid: 0 to {len(visible)} (CUDA_VISIBLE_DEVICES chooses the GPUs a sweep uses)")
    first = index % (len(visible) // gpus_per_run) * gpus_per_run
    return list(visible[first:first + gpus_per_run])


@dataclass
class SweepRun:
    run_id: str
    method: str
    base: str | None = None  # run id of the base run, for a refinement
    status: str = "queued"
    job_id: str | None = None
    job_state: str = ""  # as submitit reports it (--status)
    message: str = ""


def sweep_dir(out: str | Path) -> Path:
    return Path(out) / "sweep"


def write_state(out: str | Path, cluster: str, folder: str | Path, started: float, runs: list[SweepRun],
                finished: bool = False) -> None:
    """The state file, replaced atomically: a reader sees the previous record or this one, never half."""
    state = {"version": 1, "executor": cluster, "folder": str(folder), "host": HOST, "pid": os.getpid(),
             "started": started, "finished": time.time() if finished else None,
             "runs": [{k: v for k, v in asdict(r).items() if k != "job_state"} for r in runs]}
    replace_text(sweep_dir(out) / STATE, json.dumps(state, indent=2) + "\n")


def _verdict(result: dict[str, str]) -> tuple[str, str]:
    """A job's result as a sweep status: the runner's diverged is a failure of the run."""
    status, message = result["status"], result["message"]
    if status in ("done", "skipped", "failed"):
        return status, message
    return "failed", f"{status}: {message}"


def _error_line(e: BaseException) -> str:
    """The error's own line: submitit's FailedJobError holds the job's traceback between dashed rules, then
    the paths of the logs."""
    text = str(e)
    parts = text.split("-" * 22)
    lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def job_outcome(job: submitit.Job) -> tuple[str, str]:
    try:
        return _verdict(job.result())
    except Exception as e:  # the job raised, was killed, or timed out too often; its log says more
        return "failed", f"{_error_line(e)} (log: {job.paths.stderr})"


def counts_line(runs: list[SweepRun]) -> str:
    n = {s: sum(1 for r in runs if r.status == s) for s in STATUSES}
    done = n["done"] + n["already done"]
    already = f" ({n['already done']} already)" if n["already done"] else ""
    return (f"queued {n['queued']} | running {n['running']} | done {done}{already} | "
            f"failed {n['failed']} | skipped {n['skipped']}")


# --- status afterwards -----------------------------------------------------------------------------------
class _RunEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    run_id: Name
    method: str
    base: str | None = None
    status: Literal[STATUSES]  # type: ignore[valid-type]
    job_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")] | None = None
    message: str = ""


class _StateFile(BaseModel):
    """The declared shape of state.json (write_state): a file of another shape is named, not half-read."""

    model_config = ConfigDict(strict=True, extra="forbid")
    version: Literal[1]
    executor: str
    folder: str
    host: str
    pid: Annotated[int, Field(ge=0, lt=2**31)]
    started: Annotated[float, Field(allow_inf_nan=False)]
    finished: Annotated[float, Field(allow_inf_nan=False)] | None
    runs: list[_RunEntry]


def read_state(out: str | Path) -> dict[str, Any]:
    """The last sweep's state file, validated against its declared shape (UsageError, one line, otherwise)."""
    path = sweep_dir(out) / STATE
    try:
        if path.is_dir():
            raise UsageError(f"{display(path)} is a directory, not a sweep state file")
        return _StateFile.model_validate_json(path.read_bytes()).model_dump()
    except FileNotFoundError:
        raise UsageError(f"no sweep at {display(path)}; start one with `python -m bench sweep --methods ... --out "
                         f"{display(out)}`") from None
    except OSError as e:
        raise UsageError(f"cannot read the sweep state file {display(path)} ({e.strerror or e})") from None
    except ValidationError as e:
        raise UsageError(f"{display(path)} is not a sweep state file ({first_problem(e)}); remove it or run the "
                         "sweep again") from None


def _job(cluster: str, folder: str, job_id: str) -> submitit.Job:
    cls = submitit.LocalJob if cluster == "local" else submitit.SlurmJob
    return cls(folder, job_id)


def sweep_status(out: str | Path) -> tuple[dict[str, Any], list[SweepRun]]:
    """The runs of the last sweep in `out` as they are now: the state file's record, corrected by what
    submitit reports of each job and by the runs' status in the results store."""
    state = read_state(out)
    runs = [SweepRun(**r) for r in state["runs"]]
    db = OutDir(Path(out)).store
    store = Store(db, readonly=True) if db.is_file() else None
    sweeping = state.get("finished") is None and state["host"] == HOST and pid_alive(int(state["pid"]))
    for run in runs:
        row = store.get_run(run.run_id) if store is not None else None
        if run.job_id is not None:
            job = _job(state["executor"], state["folder"], run.job_id)
            run.job_state = job.state
            if run.status in ("queued", "running"):
                if job.paths.result_pickle.exists():
                    run.status, run.message = job_outcome(job)
                elif state["executor"] == "local":
                    # a local job's id is its controller's pid; without a result, a live pid is a running job
                    alive = state["host"] == HOST and pid_alive(int(run.job_id))
                    run.job_state = "RUNNING" if alive else "ENDED WITHOUT RESULT"
                    if not alive:
                        run.status, run.message = "failed", "its job ended without a result (killed?)"
                elif run.job_state.upper().split()[0] not in SLURM_WAITING:
                    run.status = "running"
        elif run.status == "queued" and not sweeping:
            run.message = "never submitted: the sweep ended first; run the same sweep again"
        if row is not None and row["status"] == "done" and run.status != "already done":
            run.status = "done"  # the store is the record of a finished run, whatever became of its job
        elif row is not None and row["status"] in ("failed", "diverged") and run.status != "failed":
            run.status, run.message = "failed", f"{row['status']} in the store: {row['message']}"
    return state, runs


def status_table(runs: list[SweepRun]) -> str:
    header = ("run", "job", "job state", "status", "message")
    rows = [(r.run_id, r.job_id or "-", r.job_state or "-", r.status, r.message) for r in runs]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def all_finished(runs: list[SweepRun]) -> bool:
    return all(r.status in FINISHED for r in runs)
