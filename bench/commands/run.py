"""`bench run`: train and evaluate methods x seeds on one dataset under a protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import command
from ..core.errors import UsageError
from . import add_common, add_grid, grid_configs, split_list

if TYPE_CHECKING:

    pass


def _args(p: argparse.ArgumentParser) -> None:
    add_grid(p)
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="label the runs (e.g. nightly) for `bench compare` selectors like tag=nightly (repeatable)")
    add_common(p)
    p.add_argument("--no-report", action="store_true", help="do not regenerate <out>/report (see `bench report`)")


@command("run", "train and evaluate methods under a protocol, resuming what was interrupted", _args)
def run(args: argparse.Namespace) -> int:
    """Under `torchrun --nproc-per-node=N -m bench run ...` the N processes train one run with DistributedDataParallel
    (bench.runs, docs/scale-out.md); rank 0 alone writes, evaluates and reports."""
    from metrics import named_metrics

    from ..compare import check_tags
    from ..core.console import fit
    from ..core.device import resolve_device
    from ..core.distributed import process_device, process_group, world_from_env
    from ..core.layout import OutDir
    from ..runs.execute import execute
    from ..runs.parallel import check_data_parallel

    world = world_from_env()  # several processes under torchrun: they train one run together
    tags = check_tags(args.tag)
    try:
        device = process_device(resolve_device(args.device), world)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    cfgs = grid_configs(args, device)
    check_data_parallel(cfgs, world)
    metrics = named_metrics(split_list(args.metrics))
    out = OutDir(Path(args.out))
    with process_group(world, device):
        results = execute(cfgs, out.path, args.data_root, device, metrics, args.overwrite, not args.no_progress, world)
    if not world.is_main:  # rank 0 stores, reports and sets the exit code of the run
        return 0
    if tags:
        from ..core.result_file import write_result
        from ..core.store import Store

        store = Store(out.store)
        for r in results:
            store.add_tags(r.run_id, tags)
            write_result(store, r.run_id, r.run_dir)
    from reports.summary import summary_table

    print(summary_table(out.store, [r.run_id for r in results], wide=args.wide))
    # a run another process holds is that process's to finish: skipping it is no failure
    bad = [r for r in results if r.status not in ("done", "skipped")]
    for r in results:
        if r.status == "skipped":
            print(f"skipped {r.run_id}: {r.message}", file=sys.stderr)  # one line: what to grep for
    for r in bad:
        print(f"{r.run_id}: {r.status}: {r.message}")  # one line per failed run, whatever its width
    if not args.no_report:
        from reports.render import write_report

        print(fit(f"report: {write_report(out.store, data_root=args.data_root)}"))
    return 1 if bad else 0
