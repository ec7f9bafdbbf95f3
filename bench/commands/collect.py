"""`bench collect`: upsert the result files of run directories (runs/*/result.json) into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory whose runs/*/result.json are collected (a worker's --out, or copies of them)")
    p.add_argument("--store", default=None, metavar="TARGET",
                   help="results store to upsert into: an SQLite file (default DIR/results.db)")


@command("collect", "upsert the runs' result files (runs/*/result.json) into a store; idempotent", _args)
def run(args: argparse.Namespace) -> int:
    from ..collect import collect, result_files
    from ..core.store import Store

    out = Path(args.out)
    if not result_files(out):
        raise UsageError(f"no result files under {out}/runs (runs/<id>/result.json): pass the --out directory "
                         "that `bench run` or `bench eval` wrote")
    target = Path(args.store) if args.store else out / "results.db"
    done = collect(out, Store(target))
    for line in done.damaged:
        print(f"skipped {line}", file=sys.stderr)
    print(f"collected into {target}: {done.summary()}")
    return 1 if done.damaged else 0
