"""`bench sweep`: every run of a grid as its own job (submitit: Slurm, or local processes), and its status later."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from . import add_common, add_grid, grid_configs, split_list


def _args(p: argparse.ArgumentParser) -> None:
    add_grid(p, methods_required=False)  # not needed with --status
    add_common(p)
    g = p.add_argument_group("jobs")
    g.add_argument("--executor", default="auto",
                   help="auto (Slurm where `srun` exists, else local processes), local or slurm (default auto)")
    g.add_argument("--workers", type=int, default=1,
                   help="local processes at a time; each gets OMP_NUM_THREADS = cores / workers (default 1)")
    g.add_argument("--time-min", type=int, default=720,
                   help="a job's time limit in minutes; a job at its limit is requeued and resumes (default 720)")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs per job: Slurm allocates them; locally each job sees its own, disjoint GPUs of those "
                        "this process sees (CUDA_VISIBLE_DEVICES) (default 1 locally, none with --device cpu)")
    g.add_argument("--cpus-per-run", type=int, default=None, help="CPUs per job on Slurm (and its threads)")
    g.add_argument("--array-parallelism", type=int, default=None,
                   help="Slurm: at most this many jobs of the sweep's job array at once")
    p.add_argument("--status", action="store_true",
                   help="show what became of the runs of the last sweep in --out, without submitting anything")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@command("sweep", "submit every run of a grid as its own job (Slurm or local processes) and wait for them", _args)
def run(args: argparse.Namespace) -> int:
    from ..sweep.state import SweepOptions, all_finished, check_options, status_table, sweep_status

    out = Path(args.out)
    if args.status:
        state, runs = sweep_status(out)
        print(f"sweep of {len(runs)} runs on {state['executor']} (jobs in {state['folder']})")
        print(status_table(runs))
        return 0 if all_finished(runs) else 1
    if not args.methods:
        raise UsageError("--methods is required (or --status to see the last sweep); "
                         "see `python -m bench list methods`")
    opts = SweepOptions(executor=args.executor, workers=args.workers, time_min=args.time_min,
                        partition=args.partition, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                        array_parallelism=args.array_parallelism)
    check_options(opts)  # before the heavy imports and the configs: a bad flag is answered at once
    from metrics import named_metrics

    from ..core.device import resolve_device
    from ..sweep.jobs import run_sweep

    try:  # train.precision=auto is settled for this host's device; jobs elsewhere (Slurm) may need it set
        device = resolve_device(args.device)
    except ValueError:
        device = None
    cfgs = grid_configs(args, device)
    metrics = named_metrics(split_list(args.metrics))
    runs = run_sweep(cfgs, out, args.data_root, args.device, metrics, args.overwrite, args.plugin, opts,
                     log=(lambda line: None) if args.no_progress else _log)
    print(status_table(runs))
    if not all_finished(runs):
        print(f"not every run finished: see the job logs, or `python -m bench sweep --status --out {out}`",
              file=sys.stderr)
        return 1
    return 0
