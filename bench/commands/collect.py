"""`bench collect`: upsert the result files of run directories (runs/*/result.json) into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from ..core.layout import OutDir


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory whose runs/*/result.json are collected (a worker's --out, or copies of them)")
    p.add_argument("--store", default=None, metavar="TARGET",
                   help="results store to upsert into: an SQLite file (default DIR/results.db) or a PostgreSQL "
                        "URL postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (needs the postgres extra)")


@command("collect", "upsert the runs' result files (runs/*/result.json) into a store; idempotent; exit code 1 when "
                    "a file was refused", _args)
def run(args: argparse.Namespace) -> int:
    from ..core.collect import collect, result_files
    from ..core.paths import display, require_utf8
    from ..core.store import SERVER_SCHEMES, Store, is_server

    out = Path(args.out)
    require_utf8(out, "--out")  # each run's directory is stored as text
    if not result_files(out):
        raise UsageError(f"no result files under {display(out)}/runs (runs/<id>/result.json): pass the --out "
                         "directory that `bench run` or `bench eval` wrote")
    target = args.store or OutDir(out).store
    if isinstance(target, str) and "://" in target and not is_server(target):
        raise UsageError(f"--store {target!r}: give an SQLite file path or a URL starting with "
                         f"{' or '.join(SERVER_SCHEMES)}")
    store = Store(target)
    done = collect(out, store)
    for line in done.refused:
        print(f"skipped {line}", file=sys.stderr)
    print(f"collected into {store.name}: {done.summary()}")
    return 1 if done.refused else 0
