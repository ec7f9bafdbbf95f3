"""What reports read: runs and metric values from the results store (bench.core.records.read_runs), nothing else.

Everything is returned in registry order (dataset, protocol, method, then variants after their method,
then seed), so that every table, figure and page built from it comes out in the same order every time.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.data import DATASETS
from bench.core.protocols import PROTOCOLS
from bench.core.provenance import settings
from bench.core.records import RunRecord, StoredValue, read_runs
from bench.core.store import Store
from methods import METHODS
from metrics import METRICS

#: provenance fields that are never shown as a table's setting: seeds are counted, the device is in the
#: environment section, n/a reasons are footnotes of their own
RUN_SPECIFIC = frozenset({"seed", "eval_seconds", "device", "reason", "metric"})
#: image counts, listed first in a table's notes
COUNT_FIELDS = ("n_images", "n_samples", "n_latents", "n_real", "n_fake", "n_train", "n_test", "n_pairs")
#: run statuses whose metric values go into tables
DONE = "done"


#: the store's records (bench.core.records, the one reader of its rows), under the names reports use
Run = RunRecord
Value = StoredValue


@dataclass
class Results:
    store_path: Path
    runs: list[Run]
    #: run_id -> result key -> value
    values: dict[str, dict[str, Value]]

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.runs))


def run_sort_key(run: Run) -> tuple:
    return (DATASETS.order(run.dataset), run.dataset, PROTOCOLS.order(run.protocol), run.protocol,
            METHODS.order(run.method), run.method, run.label != run.method, run.label, run.setting, run.seed,
            run.run_id)


def key_order(keys: set[str] | list[str]) -> list[str]:
    """Result keys in metric registry order (each metric's keys in declared order); unknown keys last, sorted."""
    keys = set(keys)
    ordered = [k for _, cls in METRICS.items() for k in cls.keys if k in keys]
    return ordered + sorted(keys - set(ordered))


def _matches(run: Run, patterns: list[str] | None, *fields: str) -> bool:
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(getattr(run, f), p) for p in patterns for f in fields)


def load_results(store_path: str | Path, datasets: list[str] | None = None,
                 methods: list[str] | None = None) -> Results:
    """Runs and values of a store, optionally filtered by dataset and method/variant names (globs allowed)."""
    runs = read_runs(Store(store_path, readonly=True),
                     lambda r: _matches(r, datasets, "dataset") and _matches(r, methods, "method", "variant"))
    runs.sort(key=run_sort_key)
    values = {r.run_id: r.values for r in runs}
    return Results(Path(store_path), runs, values)


def comparable_provenance(provenance: dict[str, Any]) -> dict[str, str]:
    """The provenance fields that must agree for two numbers to share a table column: the one rule compare
    applies too (bench.core.provenance.settings)."""
    return settings(provenance)


def run_signature(values: dict[str, Value]) -> dict[str, str]:
    """key -> canonical provenance text, for the keys with a value (n/a cells carry no evaluation setting)."""
    return {k: json.dumps(comparable_provenance(v.provenance), sort_keys=True)
            for k, v in values.items() if v.value is not None}
