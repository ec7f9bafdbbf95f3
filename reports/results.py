"""What reports read: runs and metric values from the results store (bench.store.Store), nothing else.

Everything is returned in registry order (dataset, protocol, method, then variants after their method,
then seed), so that every table, figure and page built from it comes out in the same order every time.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import UNHASHED_SECTIONS, config_hash
from bench.core.data import DATASETS
from bench.core.protocols import PROTOCOLS
from bench.core.provenance import settings
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


@dataclass(frozen=True)
class Value:
    metric: str
    key: str
    #: None: the method lacks a capability the metric requires (n/a)
    value: float | None
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Run:
    run_id: str
    method: str
    variant: str
    dataset: str
    protocol: str
    seed: int
    status: str
    message: str
    run_dir: Path
    config: dict[str, Any] = field(hash=False, compare=False)
    #: hash of the config without seed and eval settings: runs with equal (variant, setting) are seeds of one row
    setting: str
    code_version: str
    packages: dict[str, str] = field(hash=False, compare=False)
    device: str
    dtype: str
    steps: int
    train_seconds: float

    @property
    def label(self) -> str:
        return self.variant or self.method


@dataclass
class Results:
    store_path: Path
    runs: list[Run]
    #: run_id -> result key -> value
    values: dict[str, dict[str, Value]]

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.runs))


def setting_hash(config: dict[str, Any]) -> str:
    """Identity of what was trained, seed aside: the run's config hash without the seed."""
    return config_hash(config, (*UNHASHED_SECTIONS, "seed"))


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
    store = Store(store_path, readonly=True)
    runs = []
    for r in store.runs():
        config = json.loads(r["config_json"])
        run = Run(run_id=r["run_id"], method=r["method"], variant=r["variant"], dataset=r["dataset"],
                  protocol=r["protocol"], seed=int(r["seed"]), status=r["status"], message=r["message"] or "",
                  run_dir=Path(r["run_dir"]), config=config, setting=setting_hash(config),
                  code_version=r["code_version"], packages=json.loads(r["packages_json"] or "{}"),
                  device=r["device"], dtype=r["dtype"], steps=int(r["steps"] or 0),
                  train_seconds=float(r["train_seconds"] or 0.0))
        if _matches(run, datasets, "dataset") and _matches(run, methods, "method", "variant"):
            runs.append(run)
    runs.sort(key=run_sort_key)
    values: dict[str, dict[str, Value]] = {r.run_id: {} for r in runs}
    if runs:
        for m in store.metric_rows([r.run_id for r in runs]):
            v = None if m["value"] is None else float(m["value"])
            values[m["run_id"]][m["key"]] = Value(m["metric"], m["key"], v, m["provenance"])
    return Results(Path(store_path), runs, values)


def comparable_provenance(provenance: dict[str, Any]) -> dict[str, str]:
    """The provenance fields that must agree for two numbers to share a table column: the one rule compare
    applies too (bench.provenance.settings)."""
    return settings(provenance)


def run_signature(values: dict[str, Value]) -> dict[str, str]:
    """key -> canonical provenance text, for the keys with a value (n/a cells carry no evaluation setting)."""
    return {k: json.dumps(comparable_provenance(v.provenance), sort_keys=True)
            for k, v in values.items() if v.value is not None}
