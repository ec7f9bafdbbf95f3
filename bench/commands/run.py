"""`bench run`: train and evaluate methods x seeds on one dataset under a protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli import command, split_list
from ..core.errors import UsageError
from . import DEFAULT_OUT

if TYPE_CHECKING:
    import torch

    from ..core.config import RunConfig


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory with runs/ and results.db (default {DEFAULT_OUT})")
    p.add_argument("--data-root", default=None, help="where the dataset lives (or $AEGAN_BENCH_DATA)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--metrics", default="", help="comma-separated metric names or globs (default: all default metrics)")
    p.add_argument("--overwrite", action="store_true", help="retrain and re-evaluate instead of resuming / skipping")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--wide", action="store_true",
                   help="print every stored value in the closing summary (default: the main numbers, 100 columns)")


def add_grid(p: argparse.ArgumentParser, methods_required: bool = True) -> None:
    """The arguments that name the runs of a grid (methods x seeds on one dataset), shared with `bench sweep`."""
    p.add_argument("--methods", required=methods_required, default=None,
                   help="comma-separated method names (see `bench list methods`), variants from --variants, or "
                        "inline variants such as 'faae[loss.rec_weight=30,name=faae-rw30]'")
    p.add_argument("--dataset", default="mnist5k", help="dataset name (default mnist5k, the embedded one)")
    p.add_argument("--protocol", default="quick", help="protocol preset: paper, quick or smoke (default quick)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="override config values, e.g. --set train.epochs=3 optim.lr_g=1e-4 (repeatable)")
    p.add_argument("--variants", default=None, metavar="FILE.toml", help="named variants of methods (see bench/variants.py)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a module or .py file that registers methods (repeatable; also $AEGAN_BENCH_PLUGINS)")


def _args(p: argparse.ArgumentParser) -> None:
    add_grid(p)
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="label the runs (e.g. nightly) for `bench compare` selectors like tag=nightly (repeatable)")
    add_common(p)
    p.add_argument("--no-report", action="store_true", help="do not regenerate <out>/report (see `bench report`)")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds is empty")
    return seeds


def grid_configs(args: argparse.Namespace, device: torch.device | None = None) -> list[RunConfig]:
    """The resolved configs of the grid that add_grid's arguments name (plugins loaded first), seed-major, for
    the device they will run on (it settles train.precision=auto)."""
    from ..core.config import parse_overrides
    from ..plugins import load_plugins
    from ..resolve import load_variants, parse_methods, resolve_variant

    load_plugins(args.plugin)
    methods = parse_methods(args.methods or "", load_variants(args.variants) if args.variants else None)
    if not methods:
        raise UsageError("--methods is empty; see `python -m bench list methods`")
    overrides = parse_overrides(args.overrides)
    seeds = parse_seeds(args.seeds)
    return [resolve_variant(m, args.dataset, args.protocol, s, overrides, device) for s in seeds for m in methods]


@command("run", "train and evaluate methods under a protocol, resuming what was interrupted", _args)
def run(args: argparse.Namespace) -> int:
    """Under `torchrun --nproc-per-node=N -m bench run ...` the N processes train one run with DistributedDataParallel
    (bench.runner, docs/scale-out.md); rank 0 alone writes, evaluates and reports."""
    from metrics import named_metrics

    from ..compare import check_tags
    from ..core.device import resolve_device
    from ..core.distributed import process_device, process_group, world_from_env
    from ..runner import check_data_parallel, execute

    world = world_from_env()  # several processes under torchrun: they train one run together
    tags = check_tags(args.tag)
    try:
        device = process_device(resolve_device(args.device), world)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    cfgs = grid_configs(args, device)
    check_data_parallel(cfgs, world)
    metrics = named_metrics(split_list(args.metrics))
    out = Path(args.out)
    with process_group(world, device):
        results = execute(cfgs, out, args.data_root, device, metrics, args.overwrite, not args.no_progress, world)
    if not world.is_main:  # rank 0 stores, reports and sets the exit code of the run
        return 0
    if tags:
        from ..core.result_file import write_result
        from ..core.store import Store

        store = Store(out / "results.db")
        for r in results:
            store.add_tags(r.run_id, tags)
            write_result(store, r.run_id, r.run_dir)
    from reports.summary import summary_table

    print(summary_table(out / "results.db", [r.run_id for r in results], wide=args.wide))
    # a run another process holds is that process's to finish: skipping it is no failure
    bad = [r for r in results if r.status not in ("done", "skipped")]
    for r in results:
        if r.status == "skipped":
            print(f"skipped {r.run_id}: {r.message}", file=sys.stderr)
    for r in bad:
        print(f"{r.run_id}: {r.status}: {r.message}")
    if not args.no_report:
        from .report import report_from_args

        print(f"report: {report_from_args(out / 'results.db', None, [], [], args.data_root)}")
    return 1 if bad else 0
