"""`bench eval`: score finished runs from their run directories and checkpoints. Never trains.

Metrics already in the store are skipped unless --overwrite, so adding a metric to old runs costs only
that metric. Runs of refinement methods (e.g. "faae+sc") load their base method's finished checkpoint,
as `bench run` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from ..core.layout import OutDir
from . import add_common, split_list


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="*", metavar="GLOB", help="glob on run ids (directory names under OUT/runs)")
    p.add_argument("--methods", default="", help="comma-separated method or variant names or globs (default: all)")
    p.add_argument("--dataset", default="", help="comma-separated dataset names or globs (default: all)")
    add_common(p)
    for action in p._actions:  # the shared option means something narrower here
        if action.dest == "overwrite":
            action.help = "recompute the selected metrics even when stored (never retrains)"


@command("eval", "evaluate finished runs from their checkpoints (never trains); skips stored metrics", _args)
def run(args: argparse.Namespace) -> int:
    from metrics import named_metrics

    from ..core.device import resolve_device
    from ..runs.evaluate import evaluate_runs, find_runs

    out = Path(args.out)
    if not OutDir(out).runs.is_dir():
        raise UsageError(f"no runs under {out}/runs: train with `python -m bench run ... --out {out}` first")
    metrics = named_metrics(split_list(args.metrics))
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    found = find_runs(out, args.runs, split_list(args.methods), split_list(args.dataset))
    if not found:
        every = find_runs(out)
        labels = ", ".join(dict.fromkeys(f.cfg.label for f in every)) or "(none)"
        datasets = ", ".join(dict.fromkeys(f.cfg.dataset for f in every)) or "(none)"
        raise UsageError(f"no run under {out}/runs matches --runs {args.runs!r} --methods {args.methods!r} "
                         f"--dataset {args.dataset!r}; there are {len(every)} run(s) of methods {labels} on "
                         f"datasets {datasets}")

    evaluated, skipped = evaluate_runs(out, found, metrics, device, args.data_root, args.overwrite)
    from reports.summary import summary_table

    if evaluated:
        print(summary_table(OutDir(out).store, evaluated, wide=args.wide))
    for line in skipped:
        print(f"skipped {line}")  # one line per run left out, whatever its width
    return 1 if skipped else 0
