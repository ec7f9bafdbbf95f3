"""Baseline files: a frozen set of results, small enough to commit next to the code it guards.

``bench baseline save NAME [SELECTOR]`` writes ``baselines/NAME.json``: for every selected finished run its
identity (method, variant, dataset, protocol, seed), resolved config and config hash, code version, package
versions, device and dtype, and every metric value with its provenance. ``bench compare --baseline NAME``
reads it back as one side of a comparison, so the runs themselves need not be kept.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..core import strict_json
from ..core.errors import UsageError
from ..core.paths import path_under
from ..core.result_file import decode_value, encode_value
from ..core.store import Store
from ..core.tempfiles import replace_text
from . import RunRecord, Selector, Side, parse_selector, records_from_store

FORMAT = "aegan-bench-baseline/1"
DEFAULT_DIR = Path("baselines")
NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")


def baseline_path(name: str, file: str | Path | None = None) -> Path:
    if file:
        return Path(file)
    if not NAME_RE.match(name):
        raise UsageError(f"baseline name {name!r} may hold letters, digits and _ . + - only (or pass --file PATH)")
    return path_under(DEFAULT_DIR, f"{name}.json")


def save_baseline(name: str, records: list[RunRecord], path: Path, selector: Selector, source: str) -> dict:
    """Write the finished runs of `records` (with every metric value and its provenance) to `path`."""
    done = [r for r in records if r.status == "done"]
    if not done:
        raise UsageError(f"selector {selector} picks no finished runs in {source}: nothing to save")
    doc = {
        "format": FORMAT,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "selector": str(selector),
        "source_store": source,
        "runs": [_encoded(r.to_json()) for r in done],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # strict JSON: +-inf values as "inf"/"-inf" (as in result files), any other non-finite number as null
        replace_text(path, strict_json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write the baseline {path} ({e.strerror}); pass --file PATH") from None
    return doc


def _encoded(run: dict[str, Any]) -> dict[str, Any]:
    """A run of a baseline file with its non-finite values written as strict JSON can hold them."""
    return {**run, "metrics": {k: {**v, "value": encode_value(v["value"])} for k, v in run["metrics"].items()}}


def _decoded(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "metrics": {k: {**v, "value": decode_value(v["value"])}
                               for k, v in (run.get("metrics") or {}).items()}}


def load_baseline(path: Path) -> tuple[dict[str, Any], list[RunRecord]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"baseline file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"baseline file {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"{path} is not an aegan-bench baseline (expected \"format\": \"{FORMAT}\")")
    try:
        records = [RunRecord.from_json(_decoded(r)) for r in doc["runs"]]
    except (KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"baseline file {path} is damaged: {e}") from None
    return doc, records


def _looks_like_file(text: str) -> bool:
    return text.endswith(".json") or "/" in text


def resolve_side(role: str, text: str, stores: list[Path]) -> Side:
    """A --baseline/--candidate value: a baseline file (path, or NAME of baselines/NAME.json) or a selector.

    A value with '=' is always a selector; a path or an existing baselines/NAME.json is a file; any other
    word is the selector variant=WORD.
    """
    head = text.split("[", 1)[0]
    if "=" not in head:
        if _looks_like_file(text):
            path = Path(text)
            doc, records = load_baseline(path)
            return Side(role, f"baseline file {path} ({doc['name']!r}, saved {doc['created']})", records)
        if NAME_RE.match(text) and baseline_path(text).exists():
            path = baseline_path(text)
            doc, records = load_baseline(path)
            return Side(role, f"baseline {text!r} ({path}, saved {doc['created']})", records)
    selector = parse_selector(text)
    records = records_from_stores(stores, selector, role=f"the {role} selector {text!r}")
    where = describe_stores(stores)
    if not [r for r in records if r.status == "done"]:
        variants = sorted({r["variant"] for p in stores for r in Store(p, readonly=True).runs()})
        raise UsageError(f"the {role} selector {text!r} matches no finished run in {where}; variants there: "
                         f"{', '.join(variants) or '(none)'} (selector fields and grammar: "
                         f"`python -m bench compare --help`)")
    return Side(role, f"selector {selector} in {where}", records)


def describe_stores(stores: list[Path]) -> str:
    return str(stores[0]) if len(stores) == 1 else f"{len(stores)} stores ({stores[0]}, ...)"


def records_from_stores(stores: list[Path], selector: Selector, statuses: tuple[str, ...] = ("done", "diverged"),
                        role: str = "the selector") -> list[RunRecord]:
    """The selected runs of every store, in the order of the stores."""
    missing = [p for p in stores if not p.exists()]
    if missing:
        raise UsageError(f"no results store at {missing[0]} (for {role}); pass --store or --out, or a baseline file")
    return [r for p in stores for r in records_from_store(Store(p, readonly=True), selector, statuses)]


def describe(doc: dict[str, Any], records: list[RunRecord]) -> str:
    """A short listing of a baseline file's runs and values (for `bench baseline show`)."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"variant": r.variant, "dataset": r.dataset, "protocol": r.protocol, "seed": r.seed,
                               "code": r.code_version, "config": r.config_hash}
        row.update({k: v.value for k, v in r.values.items()})
        rows.append(row)
    head = f"{doc['name']}: {len(records)} run(s), selector {doc['selector']}, saved {doc['created']}"
    return head + "\n" + tabulate(rows, headers="keys", floatfmt=".4g", missingval="n/a")
