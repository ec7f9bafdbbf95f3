"""`bench compare --baseline SEL|FILE --candidate SEL|FILE`: regression verdicts; exit 1 when something regressed."""

from __future__ import annotations

import argparse

from ..cli import command
from ..core.errors import UsageError
from . import add_store_args, split_list, store_paths

SELECTOR_HELP = """\
selectors: comma-separated FIELD=VALUE terms that must all hold (FIELD!=VALUE excludes; VALUE may list
alternatives a|b and use * and ? globs); fields: method, variant, dataset, protocol, code (prefix of the code
version; 'current' = this checkout), tag, seed, config (config-hash prefix), run. A bare WORD means
variant=WORD, unless baselines/WORD.json exists; a path ending in .json is a baseline file.
examples: 'variant=faae,dataset=mnist5k'  'code=git:abc123'  'tag=nightly'  'faae[loss.rec_weight=0]'

exit codes: 0 nothing regressed beyond its tolerance; 1 something regressed (or a candidate run diverged);
2 a usage error (bad selector, no runs, provenance mismatch)."""


def _args(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = SELECTOR_HELP
    p.add_argument("--baseline", required=True, help="selector, baseline NAME (baselines/NAME.json) or file path")
    p.add_argument("--candidate", required=True, help="selector, baseline NAME or file path")
    p.add_argument("--metrics", default="", help="comma-separated metric keys or metric names (globs allowed); "
                                                  "default: every key both sides measured")
    p.add_argument("--tolerance", action="append", default=[], metavar="KEY=REL",
                   help="relative tolerance of a key or key glob (default 5%%; timings are not gated unless given one), e.g. "
                        "--tolerance recon_mse=0.02 (repeatable)")
    p.add_argument("--other-splits", action="store_true",
                   help="compare values computed on different train/test splits (refused by default: their split "
                        "digests differ)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the t tests (default 0.05)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--markdown", action="store_true", help="a GitHub markdown table (e.g. for a PR comment)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="load a plugin module or .py file first (its metrics' directions count)")
    add_store_args(p)


@command("compare", "compare two sets of runs metric by metric: improved, regressed or within noise", _args)
def run(args: argparse.Namespace) -> int:
    from methods.plugins import load_plugins

    from ..compare import compare, parse_tolerances, render
    from ..compare.baseline import resolve_side

    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha}")
    load_plugins(args.plugin)
    tolerances = parse_tolerances(args.tolerance)
    paths = store_paths(args)
    base = resolve_side("baseline", args.baseline, paths)
    cand = resolve_side("candidate", args.candidate, paths)
    result = compare(base, cand, split_list(args.metrics), tolerances, args.alpha, args.other_splits)
    print(render(result, "json" if args.json else "markdown" if args.markdown else "text"))
    return 1 if result.regressed else 0
