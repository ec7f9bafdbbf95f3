"""`bench list [methods|datasets|protocols|metrics] [PATTERN]`."""

from __future__ import annotations

import argparse

from ..cli import command
from ..core.errors import UsageError


def _kinds():
    from methods import METHODS
    from metrics import METRICS

    from ..core.data import DATASETS
    from ..core.protocols import PROTOCOLS

    return {"methods": METHODS, "datasets": DATASETS, "protocols": PROTOCOLS, "metrics": METRICS}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", default="all", help="methods, datasets, protocols, metrics or all")
    p.add_argument("pattern", nargs="?", default="*", help="glob on the names (e.g. 'faae*')")


def describe(obj) -> str:
    text = getattr(obj, "description", "")
    extra = []
    if hasattr(obj, "requires") and hasattr(obj, "keys"):
        extra.append(f"requires: {', '.join(sorted(obj.requires)) or 'nothing'}; keys: {', '.join(obj.keys)}")
    if hasattr(obj, "provides") and hasattr(obj, "phases"):
        extra.append(f"phases: {', '.join(p.name for p in obj.phases) or '(reuses ' + str(obj.base_method) + ')'}")
    return text + (f"  [{'; '.join(extra)}]" if extra else "")


@command("list", "list the registered methods, datasets, protocols and metrics", _args)
def run(args: argparse.Namespace) -> int:
    kinds = _kinds()
    if args.kind != "all" and args.kind not in kinds:
        raise UsageError(f"unknown kind {args.kind!r}; valid: all, {', '.join(kinds)}")
    for kind, reg in kinds.items():
        if args.kind not in ("all", kind):
            continue
        print(f"{kind}:")
        for name in reg.names(args.pattern):
            print(f"  {name:<14} {describe(reg.get(name))}")
    return 0
