"""Selectors: which runs of a store or a baseline file a comparison reads (grammar: bench.compare), and tags."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UsageError
from ..core.provenance import code_version
from ..resolve import split_top_level


# --- selectors ------------------------------------------------------------------------------------------
def _glob(pattern: str, text: str) -> bool:
    if pattern == text:
        return True
    if "*" not in pattern and "?" not in pattern:
        return False
    return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))


def _match_code(pattern: str, version: str) -> bool:
    if pattern == "current":
        return version == code_version()
    return version.startswith(pattern) or _glob(pattern, version)


def _match_tag(pattern: str, tags: list[str]) -> bool:
    return any(_glob(pattern, t) for t in tags)


#: field -> (run dict, value) -> match
SELECTOR_FIELDS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "method": lambda r, v: _glob(v, r["method"]),
    "variant": lambda r, v: _glob(v, r["variant"]),
    "dataset": lambda r, v: _glob(v, r["dataset"]),
    "protocol": lambda r, v: _glob(v, r["protocol"]),
    "code": lambda r, v: _match_code(v, r["code_version"]),
    "tag": lambda r, v: _match_tag(v, r["tags"]),
    "seed": lambda r, v: str(r["seed"]) == v,
    "config": lambda r, v: r["config_hash"].startswith(v),
    "run": lambda r, v: _glob(v, r["run_id"]),
}


@dataclass(frozen=True)
class Term:
    field: str
    values: tuple[str, ...]
    negate: bool = False

    def matches(self, run: dict[str, Any]) -> bool:
        hit = any(SELECTOR_FIELDS[self.field](run, v) for v in self.values)
        return hit != self.negate

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negate else '='}{'|'.join(self.values)}"


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...]

    def matches(self, run: dict[str, Any]) -> bool:
        return all(t.matches(run) for t in self.terms)

    def __str__(self) -> str:
        return ",".join(map(str, self.terms)) or "(all runs)"


_TERM_RE = re.compile(r"^([a-z_]+)(!=|=)(.*)$", re.S)


def parse_selector(text: str) -> Selector:
    """'variant=faae,dataset=mnist5k|cifar10' -> Selector; see the module docstring for the grammar."""
    terms = []
    try:
        parts = split_top_level(text)
    except ValueError as e:
        raise UsageError(f"selector {text!r}: {e}") from None
    for part in parts:
        m = _TERM_RE.match(part)
        if m is None:
            if "=" in part.split("[", 1)[0]:
                raise UsageError(f"selector term {part!r} must look like FIELD=VALUE; fields: {', '.join(SELECTOR_FIELDS)}")
            terms.append(Term("variant", (part,)))
            continue
        name, op, value = m.groups()
        if name not in SELECTOR_FIELDS:
            raise UsageError(f"unknown selector field {name!r} in {text!r}; valid: {', '.join(SELECTOR_FIELDS)}")
        values = tuple(v for v in split_top_level(value, "|"))
        if not values:
            raise UsageError(f"selector term {part!r} has no value")
        terms.append(Term(name, values, op == "!="))
    return Selector(tuple(terms))


# --- what is compared -----------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run and its metric values, from the store or from a baseline file."""

    run_id: str
    method: str
    variant: str
    dataset: str
    protocol: str
    seed: int
    config_hash: str
    code_version: str
    status: str = "done"
    tags: list[str] = field(default_factory=list)
    device: str = ""
    dtype: str = ""
    created: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    #: key -> {"metric": name, "value": float | None, "provenance": {...}}
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_selectable(self) -> dict[str, Any]:
        """The fields selectors read (see SELECTOR_FIELDS), without copying configs and metric values."""
        return {k: getattr(self, k) for k in ("run_id", "method", "variant", "dataset", "protocol", "seed",
                                              "config_hash", "code_version", "tags")}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRecord:
        return cls(**d)


def records_from_store(store, selector: Selector, statuses: Iterable[str] = ("done", "diverged")) -> list[RunRecord]:
    """Runs of the store that the selector picks (in creation order), with their metric values."""
    out = []
    for r in store.runs():
        if r["status"] not in statuses:
            continue
        rec = RunRecord(
            run_id=r["run_id"], method=r["method"], variant=r["variant"], dataset=r["dataset"],
            protocol=r["protocol"], seed=r["seed"], config_hash=r["config_hash"], code_version=r["code_version"],
            status=r["status"], tags=store.split_tags(r["tags"]), device=r["device"], dtype=r["dtype"],
            created=r["created"], config=json.loads(r["config_json"]), packages=json.loads(r["packages_json"]))
        if selector.matches(rec.as_selectable()):
            out.append(rec)
    rows = store.metric_rows([r.run_id for r in out]) if out else []
    by_id = {r.run_id: r for r in out}
    for m in rows:
        by_id[m["run_id"]].metrics[m["key"]] = {"metric": m["metric"], "value": m["value"],
                                                "provenance": m["provenance"]}
    return out


# --- tags -------------------------------------------------------------------------------------------------
TAG_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")


def check_tags(tags: list[str]) -> list[str]:
    """--tag values: one word each (letters, digits and _ . : + -), since the store keeps them comma-joined."""
    for t in tags:
        if not TAG_RE.match(t):
            raise UsageError(f"--tag {t!r} may hold letters, digits and _ . : + - only")
    return sorted(set(tags))
