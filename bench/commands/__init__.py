"""Sub-commands of `python -m bench`, one module each (found by bench.cli), and the options they share.

Every invocation imports every command module to build the parser, so the commands import the heavy parts
(torch, methods, metrics, reports, the engine) inside their functions: lazily, for start-up speed. A command
is thin (arguments -> one call into the engine, compare or reports -> exit code) and imports no other command:
what several share lives here.
"""

from __future__ import annotations

import argparse
import glob
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UsageError
from ..core.layout import OutDir

if TYPE_CHECKING:
    import torch

    from ..core.config import RunConfig

def split_list(text: str | None) -> list[str]:
    """A comma-separated option's items, stripped, empty ones left out."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


#: where `bench run` writes and the other commands read, unless --out says otherwise
DEFAULT_OUT = "bench-out"


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
    p.add_argument("--variants", default=None, metavar="FILE.toml", help="named variants of methods (format: README, Variants and plugins; bench/runs/resolve.py)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import a module or .py file that registers methods (repeatable; also $AEGAN_BENCH_PLUGINS)")


def parse_seeds(text: str) -> list[int]:
    """--seeds: comma-separated integers in numpy's seed range, checked before any run is claimed."""
    from ..core.store import SEED_LIMIT

    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UsageError("--seeds is empty")
    bad = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if bad:
        raise UsageError(f"--seeds {text!r}: a seed must be an integer from 0 to {SEED_LIMIT - 1} (numpy's range)")
    return seeds


#: the key of a --set item: section.key, as the config's dataclasses name them
SET_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")


def check_set_items(items: list[str]) -> list[str]:
    """--set items whose key is no config key's shape are refused here, quoted: the config's own messages name
    keys as they are, control characters and line breaks included."""
    for item in items:
        if not SET_KEY_RE.fullmatch(item.partition("=")[0].strip()):
            raise UsageError(f"--set {item!r} must look like section.key=value (e.g. train.epochs=3)")
    return items


def check_out_paths(args: argparse.Namespace) -> None:
    """--out and --data-root before anything is claimed: --out must be a directory (or not exist yet), and both
    are stored and printed (run directories, data sources), so they must be valid UTF-8."""
    from ..core.paths import display, require_utf8

    require_utf8(args.out, "--out")
    if args.data_root:
        require_utf8(args.data_root, "--data-root")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {display(out)} is a file, not a directory; pass a directory (it is created when "
                         "missing)")


def grid_configs(args: argparse.Namespace, device: torch.device | None = None) -> list[RunConfig]:
    """The resolved configs of the grid that add_grid's arguments name (plugins loaded first), seed-major, for
    the device they will run on (it settles train.precision=auto)."""
    from methods.plugins import load_plugins

    from ..core.config import parse_overrides
    from ..runs.resolve import load_variants, parse_methods, resolve_variant

    check_out_paths(args)
    load_plugins(args.plugin)
    methods = parse_methods(args.methods or "", load_variants(args.variants) if args.variants else None)
    if not methods:
        raise UsageError("--methods is empty; see `python -m bench list methods`")
    overrides = parse_overrides(check_set_items(args.overrides))
    seeds = parse_seeds(args.seeds)
    return [resolve_variant(m, args.dataset, args.protocol, s, overrides, device) for s in seeds for m in methods]


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--store", action="append", default=None, metavar="DB",
                   help="results database; repeatable, globs allowed (e.g. 'nightly/*/results.db': one store per "
                        "CI run); default OUT/results.db")
    g.add_argument("--out", default=None, help="output directory of `bench run` holding results.db (default bench-out)")


def store_paths(args: argparse.Namespace) -> list[Path]:
    """The stores to read: every --store (globs expanded, in sorted order), else OUT/results.db."""
    if not args.store:
        return [OutDir(Path(args.out or DEFAULT_OUT)).store]
    paths: list[Path] = []
    for pattern in args.store:
        if any(c in pattern for c in "*?["):
            hits = sorted(glob.glob(pattern))
            if not hits:
                raise UsageError(f"--store {pattern!r} matches no file")
            paths += [Path(h) for h in hits]
        else:
            paths.append(Path(pattern))
    # not list(...): once the command modules are imported, `list` in this package's namespace is bench.commands.list
    return [*dict.fromkeys(paths)]
