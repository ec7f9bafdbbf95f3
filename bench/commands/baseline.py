"""`bench baseline save|show|list`: freeze results into a JSON file to commit and compare against later."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import command
from . import add_store_args, store_paths


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("save", help="save the runs a selector picks as baselines/NAME.json")
    s.add_argument("name", help="baseline name (letters, digits, _ . + -)")
    s.add_argument("selector", nargs="?", default="",
                   help="which runs (see `bench compare --help`); default: every finished run of the store")
    s.add_argument("--file", default=None, help="write here instead of baselines/NAME.json")
    add_store_args(s)
    sh = sub.add_parser("show", help="print a baseline's runs and values")
    sh.add_argument("name", help="baseline NAME (baselines/NAME.json) or a path")
    sub.add_parser("list", help="list baselines/*.json")


def _path_of(name: str) -> Path:
    from ..compare.baseline import baseline_path

    return Path(name) if name.endswith(".json") or "/" in name else baseline_path(name)


@command("baseline", "save, show or list baseline files (frozen results to compare against)", _args)
def run(args: argparse.Namespace) -> int:
    from ..compare.baseline import DEFAULT_DIR, baseline_path, describe, load_baseline, save_baseline

    if args.action == "save":
        from ..compare import parse_selector
        from ..compare.baseline import describe_stores, records_from_stores

        path = baseline_path(args.name, args.file)
        stores = store_paths(args)
        selector = parse_selector(args.selector)
        records = records_from_stores(stores, selector, statuses=("done",))
        existed = path.exists()
        doc = save_baseline(args.name, records, path, selector, describe_stores(stores))
        n_values = sum(len(r["metrics"]) for r in doc["runs"])
        variants = sorted({r["variant"] for r in doc["runs"]})
        print(f"{'replaced' if existed else 'wrote'} {path}: {len(doc['runs'])} run(s) of {', '.join(variants)}, "
              f"{n_values} values (selector {selector})")
        return 0
    if args.action == "show":
        doc, records = load_baseline(_path_of(args.name))
        print(describe(doc, records))
        return 0
    files = sorted(DEFAULT_DIR.glob("*.json"))
    if not files:
        print(f"no baselines in {DEFAULT_DIR}/ (create one with `python -m bench baseline save NAME SELECTOR`)")
    for f in files:
        doc, records = load_baseline(f)
        print(f"{f.stem:<20} {len(records)} run(s)  {doc['selector']}  saved {doc['created']}")
    return 0
