"""Selectors: which runs of a store or a baseline file a comparison reads (grammar: bench.compare), and tags."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core.errors import UsageError
from ..core.provenance import code_version
from ..core.records import RunRecord, read_runs
from ..runs.resolve import split_top_level


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
def records_from_store(store, selector: Selector, statuses: Iterable[str] = ("done", "diverged")) -> list[RunRecord]:
    """Runs of the store that the selector picks (in creation order), with their metric values."""
    statuses = tuple(statuses)
    return read_runs(store, lambda r: r.status in statuses and selector.matches(r.as_selectable()))


# --- tags -------------------------------------------------------------------------------------------------
TAG_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")


def check_tags(tags: list[str]) -> list[str]:
    """--tag values: one word each (letters, digits and _ . : + -), since the store keeps them comma-joined."""
    for t in tags:
        if not TAG_RE.match(t):
            raise UsageError(f"--tag {t!r} may hold letters, digits and _ . : + - only")
    return sorted(set(tags))
