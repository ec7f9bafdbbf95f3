"""`bench tune`: every method gets the same search budget (trials x steps) over its declared space, scored on a
validation split carved from the training split; the best settings become a variants file for `bench run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from . import DEFAULT_OUT, parse_seeds, split_list


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", required=True, help="comma-separated registered methods, e.g. faae,aae,bigan,ali")
    p.add_argument("--dataset", default="mnist5k", help="dataset name (default mnist5k)")
    p.add_argument("--protocol", default="quick", help="protocol the trials run under (default quick)")
    p.add_argument("--trials", type=int, default=20, help="trials per method: the budget, the same for each (20)")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps per trial, the same for each method (default: the protocol's)")
    p.add_argument("--objective", default="recon_mse",
                   help="result key to optimise on the validation split, or several (comma-separated) for a "
                        "Pareto front, e.g. fid_samples,reencode_ratio (default recon_mse)")
    p.add_argument("--space", default=None, metavar="FILE.toml",
                   help="the search space per method (default: the shipped one, bench/tune/space.py)")
    p.add_argument("--validation", type=float, default=0.1,
                   help="fraction of the training split held out to score trials (default 0.1)")
    p.add_argument("--seeds", default="0", help="seeds each trial trains with; its score is their mean (default 0)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="config values every trial shares (the search's own keys win)")
    p.add_argument("--storage", default=None,
                   help="Optuna's storage: an SQLite file or postgresql://... (default OUT/results.db)")
    p.add_argument("--workers", type=int, default=1, help="local processes sharing the studies (default 1)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    p.add_argument("--heartbeat", type=int, default=30,
                   help="seconds between a trial's heartbeats; a killed worker's trial is run again after twice "
                        "that (default 30)")
    p.add_argument("--variants-out", default=None, metavar="FILE.toml",
                   help="where to write the best settings (default OUT/tuned-DATASET-PROTOCOL.toml)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}); trial runs go to "
                                                       "OUT/tune/<study>/")
    p.add_argument("--data-root", default=None, help="where the dataset lives (or $AEGAN_BENCH_DATA)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a module or .py file that registers methods (repeatable)")


@command("tune", "search each method's settings with the same budget, scored on a validation split", _args)
def tune(args: argparse.Namespace) -> int:
    from methods.plugins import load_plugins

    from ..core.config import parse_overrides
    from ..core.console import fit
    from ..tune.run import tune as run_tune
    from ..tune.study import TuneSpec
    from ..tune.variants import summary

    load_plugins(args.plugin)
    methods = split_list(args.methods)
    if not methods:
        raise UsageError("--methods is empty; see `python -m bench list methods`")
    spec = TuneSpec(methods=tuple(methods), dataset=args.dataset, protocol=args.protocol, trials=args.trials,
                    steps=args.steps, objective=tuple(split_list(args.objective)),
                    seeds=tuple(parse_seeds(args.seeds)), overrides=parse_overrides(args.overrides),
                    space=args.space, validation=args.validation, out=args.out, storage=args.storage,
                    data_root=args.data_root, device=args.device, sampler_seed=args.sampler_seed,
                    heartbeat=args.heartbeat, plugins=tuple(args.plugin))
    result = run_tune(spec, args.workers, Path(args.variants_out) if args.variants_out else None)
    for study in result.studies:
        print(fit(summary(study)))
    print(fit(f"variants: {result.variants} (python -m bench run --variants {result.variants} --methods ...)"))
    return 0
