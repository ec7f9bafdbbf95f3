"""`bench report`: tables, figure grids and plots from a results store and its run directories."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from ..core.layout import OutDir
from . import DEFAULT_OUT, split_list


def _args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="output directory of `bench run` (its results.db; default bench-out)")
    where.add_argument("--store", default=None, metavar="PATH", help="a results store (results.db) anywhere")
    p.add_argument("--report-dir", default=None, metavar="DIR", help="where to write (default: report/ next to the store)")
    p.add_argument("--datasets", default="", help="comma-separated dataset names or globs (default: all in the store)")
    p.add_argument("--methods", default="", help="comma-separated method or variant names or globs (default: all)")
    p.add_argument("--data-root", default=None,
                   help="where the datasets live (or $AEGAN_BENCH_DATA): the grids show held-out images")
    p.add_argument("--no-figures", action="store_true", help="tables and text only: no grids, no plots")
    p.add_argument("--claims", default=None, metavar="FILE.toml",
                   help="more claims to check beside the registered ones (see reports/claims.py for the format)")


def report_from_args(store: Path, report_dir: str | None, datasets: list[str], methods: list[str],
                     data_root: str | None, figures: bool = True, claims_file: str | None = None) -> Path:
    from reports.claims import load_claims
    from reports.render import write_report
    from reports.results import load_results

    # a claim may name a variant of this store's runs: the labels there are what it can name
    claims = load_claims(claims_file, [r.label for r in load_results(store).runs]) if claims_file else None
    return write_report(store, report_dir, datasets or None, methods or None, data_root, grids=figures, plots=figures,
                        claims=claims)


@command("report", "render tables, figure grids and plots (report.md, report.html) from a results store", _args)
def run(args: argparse.Namespace) -> int:
    store = Path(args.store) if args.store else OutDir(Path(args.out or DEFAULT_OUT)).store
    if not store.is_file():
        raise UsageError(f"no results store at {store}; run `python -m bench run --methods ... --out DIR` first, "
                         "then `python -m bench report --out DIR`")
    datasets, methods = split_list(args.datasets), split_list(args.methods)
    from reports.results import load_results

    if (datasets or methods) and not load_results(store, datasets or None, methods or None).runs:
        everything = load_results(store)
        raise UsageError(f"no run in {store} matches --datasets {args.datasets or '*'} --methods {args.methods or '*'}; "
                         f"the store has datasets {', '.join(everything.datasets()) or '(none)'} and methods "
                         f"{', '.join(dict.fromkeys(r.label for r in everything.runs)) or '(none)'}")
    from reports.render import default_report_dir

    where = default_report_dir(store, args.report_dir)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write the report to {where} ({e.strerror}); pass --report-dir DIR") from None
    if not os.access(where, os.W_OK):
        raise UsageError(f"cannot write the report to {where} (not writable); pass --report-dir DIR")
    path = report_from_args(store, args.report_dir, datasets, methods, args.data_root, not args.no_figures,
                            args.claims)
    print(f"report: {path} and {path.with_suffix('.md')}")
    return 0
