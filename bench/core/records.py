"""The one reader of the results store's rows: a run and its metric values as a RunRecord, for regression
verdicts (bench.compare, baseline files), reports and the closing summary alike."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import UNHASHED_SECTIONS, config_hash
from .store import Store


@dataclass(frozen=True)
class StoredValue:
    """A metric value as the store holds it: the metric that produced it, its key, value and provenance."""

    metric: str
    key: str
    #: None: the method lacks a capability the metric requires (n/a)
    value: float | None
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class RunRecord:
    """One run: its store row and, when read, its metric values (from the store or a baseline file)."""

    run_id: str
    method: str
    variant: str
    dataset: str
    protocol: str
    seed: int
    config_hash: str = ""
    code_version: str = ""
    status: str = "done"
    message: str = ""
    tags: tuple[str, ...] = ()
    device: str = ""
    dtype: str = ""
    created: float = 0.0
    steps: int = 0
    train_seconds: float = 0.0
    run_dir: Path = Path()
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    packages: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    #: key -> its value
    values: dict[str, StoredValue] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        return self.variant or self.method

    @property
    def setting(self) -> str:
        """Identity of what was trained, seed aside: runs of one label and setting are seeds of one row."""
        return setting_hash(self.config)

    def as_selectable(self) -> dict[str, Any]:
        """The fields selectors read (bench.compare.selectors.SELECTOR_FIELDS)."""
        return {k: getattr(self, k) for k in ("run_id", "method", "variant", "dataset", "protocol", "seed",
                                              "config_hash", "code_version", "tags")}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"], d["run_dir"] = list(self.tags), str(self.run_dir)
        # baseline files keep their format: values under "metrics", as {"metric", "value", "provenance"}
        # (asdict has turned the StoredValues into dicts: read them from self)
        d.pop("values")
        d["metrics"] = {k: {"metric": v.metric, "value": v.value, "provenance": v.provenance}
                        for k, v in self.values.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRecord:
        """A record from to_json's form (baseline files of every version: fields added since take defaults)."""
        d = dict(d)
        raw = d.pop("metrics", None) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in names - {"tags", "values", "run_dir"}},
                  tags=tuple(d.get("tags") or ()), run_dir=Path(d.get("run_dir") or ""))
        rec.values.update({k: StoredValue(v["metric"], k, v["value"], v.get("provenance") or {}) for k, v in raw.items()})
        return rec


def setting_hash(config: dict[str, Any]) -> str:
    """The run's config hash without the seed."""
    return config_hash(config, (*UNHASHED_SECTIONS, "seed"))


def read_runs(store: Store, keep: Callable[[RunRecord], bool] = lambda r: True,
              run_ids: Iterable[str] | None = None) -> list[RunRecord]:
    """The store's runs (in creation order) that `keep` accepts, optionally only `run_ids`, with their values."""
    wanted = None if run_ids is None else set(run_ids)
    out = []
    for r in store.runs():
        if wanted is not None and r["run_id"] not in wanted:
            continue
        rec = RunRecord(
            run_id=r["run_id"], method=r["method"], variant=r["variant"], dataset=r["dataset"], protocol=r["protocol"],
            seed=int(r["seed"]), config_hash=r["config_hash"], code_version=r["code_version"], status=r["status"],
            message=r["message"] or "", tags=tuple(Store.split_tags(r["tags"])), device=r["device"], dtype=r["dtype"],
            created=float(r["created"] or 0.0), steps=int(r["steps"] or 0),
            train_seconds=float(r["train_seconds"] or 0.0), run_dir=Path(r["run_dir"] or ""),
            config=json.loads(r["config_json"] or "{}"), packages=json.loads(r["packages_json"] or "{}"))
        if keep(rec):
            out.append(rec)
    by_id = {r.run_id: r for r in out}
    for m in store.metric_rows(list(by_id)) if out else []:
        v = None if m["value"] is None else float(m["value"])
        by_id[m["run_id"]].values[m["key"]] = StoredValue(m["metric"], m["key"], v, m["provenance"])
    return out
