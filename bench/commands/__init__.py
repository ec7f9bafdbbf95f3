"""Sub-commands of `python -m bench`, one module each (found by bench.cli), and the options they share.

Every invocation imports every command module to build the parser, so the commands import the heavy parts
(torch, methods, metrics, reports, the engine) inside their functions: lazily, for start-up speed. A command
is thin (arguments -> one call into the engine, compare or reports -> exit code) and imports no other command:
what several share lives here.
"""

from __future__ import annotations

import argparse
import glob
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
    from methods.plugins import load_plugins

    from ..core.config import parse_overrides
    from ..runs.resolve import load_variants, parse_methods, resolve_variant

    load_plugins(args.plugin)
    methods = parse_methods(args.methods or "", load_variants(args.variants) if args.variants else None)
    if not methods:
        raise UsageError("--methods is empty; see `python -m bench list methods`")
    overrides = parse_overrides(args.overrides)
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
    return [*dict.fromkeys(paths)]  # not list(): the `list` command's module shadows it in this package
