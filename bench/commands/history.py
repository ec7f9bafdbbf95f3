"""`bench history --metric KEY --method NAME`: one metric across code versions, as a table and a PNG plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from ..core.paths import path_under
from . import add_store_args, store_paths


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", required=True, help="a result key, e.g. recon_mse (see the columns of `bench run`)")
    p.add_argument("--method", required=True, help="a method or variant name (the run's label)")
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset, one line each)")
    p.add_argument("--protocol", default=None, help="only this protocol")
    p.add_argument("--where", default="", help="further selector terms, e.g. 'tag=nightly' (see `bench compare --help`)")
    p.add_argument("--plot", default=None, help="PNG path (default: next to the store, history-METRIC-METHOD.png)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    add_store_args(p)


@command("history", "show one metric of a method across code versions (table and PNG plot)", _args)
def run(args: argparse.Namespace) -> int:
    from metrics import direction

    from ..compare import parse_selector
    from ..compare.baseline import describe_stores, records_from_stores
    from ..compare.history import history_frame, plot, summarise
    from ..core.store import Store

    stores = store_paths(args)
    terms = [f"variant={args.method}"]
    terms += [f"dataset={args.dataset}"] if args.dataset else []
    terms += [f"protocol={args.protocol}"] if args.protocol else []
    terms += [args.where] if args.where else []
    selector = parse_selector(",".join(terms))
    records = records_from_stores(stores, selector, statuses=("done",))
    if not records:
        labels = sorted({r["variant"] for p in stores for r in Store(p, readonly=True).runs()})
        raise UsageError(f"no finished runs match {selector} in {describe_stores(stores)}; methods and variants "
                         f"there: {', '.join(labels) or '(none)'}")
    keys = sorted({k for r in records for k in r.values})
    if args.metric not in keys:
        raise UsageError(f"no run of {selector} measured {args.metric!r}; keys there: {', '.join(keys)}")
    df = history_frame(records, args.metric)
    if df.empty:
        raise UsageError(f"{args.metric} is n/a for every run of {selector}")
    dirn = direction(args.metric)
    print(f"{args.metric} ({dirn} is better) of {args.method} across code versions, in order of first run:")
    print(summarise(df).to_markdown(index=False, floatfmt=".4g"))
    if not args.no_plot:
        where = stores[0].parent
        path = Path(args.plot) if args.plot else path_under(where, f"history-{args.metric}-{args.method}.png")
        try:
            print(f"plot: {plot(df, args.metric, args.method, dirn, path)}")
        except OSError as e:  # e.g. a read-only store directory, where the plot goes by default
            raise UsageError(f"cannot write the plot {path} ({e.strerror}); pass --plot FILE or --no-plot") from None
    return 0
