"""Claims: statements a paper makes that the stored numbers can decide, checked on the runs of a report's tables.

A claim names two methods (row labels: a method or variant name) and the metric keys that decide it, each read in its
own direction (metrics' registry: lower or higher is better, or closest to 1, read as |ln x|). A verdict a reviewer
would accept:

1. Seeds: "supported" and "not supported" need at least MIN_SEEDS seeds per side on every key; with fewer the claim
   is "undecided", with its numbers and the reason.
2. Every key: a key not measured, or n/a, for either method leaves the claim undecided, naming the key.
3. Learned: both methods pass every learned test (reports.learned) that gates one of the claim's keys; a method that
   fails one (or cannot be tested) leaves the claim undecided, named with the reason.
4. Tests: per key, one-sided Welch t tests (scipy) that the claimed method is better, and of the reverse. The p-values
   of every key of every claim a report decides (those passing 1-3) are corrected together with Holm's method
   (statsmodels), each direction as one family. A key supports the claim when its corrected p < ALPHA and the
   change in the claimed direction is beyond the 5% tolerance; it contradicts it the same way in reverse. The claim
   is supported when every key supports it, not supported when a key contradicts it and none supports it, else
   undecided (within the noise, or mixed).
5. Rows are matched by label and configuration: a table row is one label trained under one configuration (its runs
   are its seeds); with several configurations of a label every pair of rows is checked, each named.

`bench compare` keeps its own rules (bench.core.stats.compare_values); only claims follow these.

The F-AAE paper's claims ship registered; more come from a TOML file (`bench report --claims FILE.toml`)::

    [faae-beats-ali]
    text = "F-AAE reconstructs held-out images better than ALI"
    source = "my notes"
    better = "faae"
    than = "ali"
    keys = ["recon_mse", "lpips"]
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bench.core.config import ConfigError
from bench.core.paths import MAX_NAME, SAFE_NAME_RE, display
from bench.core.provenance import CLOSEST_TO_1, LOWER
from bench.core.registry import Registry
from bench.core.schema import Name, first_problem
from bench.core.stats import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    as_lower,
    holm,
    one_sided_welch,
    relative_change,
)
from bench.core.toml_file import read_toml
from methods import METHODS
from metrics import METRICS, direction

from .learned import outcomes
from .results import Value
from .tables import MISSING_TEXT, NA, OK, Row, Table, format_cell

SUPPORTED, NOT_SUPPORTED, UNDECIDED = "supported", "not supported", "undecided"
#: seeds per side, on every key, below which a claim is undecided: with 2 per side the seed spread is a guess from
#: two values and Welch's test has 1-2 degrees of freedom; seed-to-seed spread of these metrics often exceeds 5%
MIN_SEEDS = 3
ALPHA = DEFAULT_ALPHA
TOLERANCE = DEFAULT_TOLERANCE
CORRECTION = "Holm (statsmodels.stats.multitest.multipletests, method='holm')"
PAPER = "F-AAE paper (Flipped-Adversarial AutoEncoders), section 1 and 3"


@dataclass(frozen=True)
class Claim:
    name: str
    text: str
    source: str
    #: the method (a row's label: method or variant name) claimed better, and the one it is compared with
    better: str
    than: str
    #: the metric keys that decide the claim, each read in its own direction
    keys: tuple[str, ...]


CLAIMS: Registry[Claim] = Registry("claim")
for _c in (
    Claim("faae-sharper-than-aae", "F-AAE's reconstructions are sharper than AAE's", PAPER, "faae", "aae",
          ("recon_sharpness_ratio", "fid_recon")),
    Claim("faae-closer-than-bigan", "F-AAE's reconstructions resemble the originals better than BiGAN's", PAPER,
          "faae", "bigan", ("recon_mse", "lpips")),
    Claim("faae-inverse-than-bigan", "F-AAE's G and E are closer to inverses of each other than BiGAN's", PAPER,
          "faae", "bigan", ("reencode_ratio", "cycle_mse")),
    Claim("faae-samples-sharper-than-aae", "F-AAE's generator produces sharper images than AAE's", PAPER, "faae",
          "aae", ("sample_sharpness_ratio", "fid_samples")),
):
    CLAIMS.add(_c.name, _c)

CLAIM_FIELDS = ("text", "source", "better", "than", "keys")


class ClaimEntry(BaseModel):
    """One table of a claims file: the declared schema of a claim, checked by pydantic (strict: no coercion)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    text: Annotated[str, StringConstraints(min_length=1, max_length=2_000)]
    source: Annotated[str, StringConstraints(max_length=2_000)]
    #: row labels: a method, or a variant's name (inline ones included), as run ids hold them
    better: Name
    than: Name
    keys: Annotated[list[Name], Field(min_length=1, max_length=100)]


def _label_error(label: str, known: set[str]) -> str | None:
    """Why a claim's method label names no method: an inline variant's method (before '[') must be registered;
    a plain label must be a registered method or one of `known` (the labels of the runs it is checked on)."""
    head = label.partition("[")[0]
    if "[" in label:
        return None if head in METHODS else f"{head!r} (of {label!r}) is not a registered method"
    if label in METHODS or label in known:
        return None
    return f"no method or variant {label!r}"


def load_claims(path: str | Path, labels: Iterable[str] | None = None) -> list[Claim]:
    """Claims from a TOML file, one table per claim (see the module docstring); every field is checked against the
    ClaimEntry schema, every key against the metric registry, and better/than against the registered methods and,
    when given, the row `labels` the claims will be checked on (a variant from a variants file is known only there).
    Anything wrong is a ConfigError of one line naming the claim."""
    doc = read_toml(path, "claims file")
    registered_keys = {k for _, cls in METRICS.items() for k in cls.keys}
    known = set(labels or ())
    out = []
    for name, d in doc.items():
        if not SAFE_NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
            raise ConfigError(f"claim [{name!r}] in {display(path)}: a claim's name may hold letters, digits and "
                              "_ . + - [ ] = , only")
        where = f"claim [{name}] in {display(path)}"
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a table with the fields {', '.join(CLAIM_FIELDS)}")
        missing, extra = [f for f in CLAIM_FIELDS if f not in d], sorted(set(d) - set(CLAIM_FIELDS))
        if missing or extra:
            raise ConfigError(f"{where} needs the fields {', '.join(CLAIM_FIELDS)} (keys: a non-empty list of "
                              f"metric keys); missing {missing or 'none'}, unknown {extra or 'none'}")
        try:
            entry = ClaimEntry.model_validate(d)
        except ValidationError as e:
            raise ConfigError(f"{where}: {first_problem(e)} (fields: {', '.join(CLAIM_FIELDS)}; keys: a non-empty "
                              "list of metric keys)") from None
        unknown = [k for k in entry.keys if k not in registered_keys]
        if unknown:
            raise ConfigError(f"{where}: unknown metric key(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(registered_keys))}")
        for label in (entry.better, entry.than):
            if labels is not None or "[" in label:
                problem = _label_error(label, known)
                if problem:
                    raise ConfigError(f"{where}: {problem}; valid: {', '.join(sorted({*METHODS, *known}))}")
        if entry.better == entry.than:
            raise ConfigError(f"{where}: better and than are both {entry.better!r}")
        out.append(Claim(name, entry.text, entry.source, entry.better, entry.than, tuple(entry.keys)))
    return out


@dataclass(frozen=True)
class KeyEvidence:
    key: str
    better: str  # the claimed method's cell, as printed
    than: str
    #: the claimed method's relative difference ("" when not compared), e.g. "-25.9%"; of |ln x| for a key closest to 1
    change: str = ""
    #: the same as an improvement: positive when the claimed method is better in the key's direction
    gain: float | None = None
    #: one-sided p-values of the claim and of its reverse, and Holm's corrections; None where not tested
    p_value: float | None = None
    p_reverse: float | None = None
    p_holm: float | None = None
    p_holm_reverse: float | None = None
    verdict: str = UNDECIDED


@dataclass(frozen=True)
class Checked:
    claim: Claim
    #: the two rows' labels (with their configuration when a label has several)
    better: str
    than: str
    verdict: str
    evidence: tuple[KeyEvidence, ...]
    #: why the claim cannot be decided (seeds, keys, learned tests); empty when it was tested
    reasons: tuple[str, ...] = ()


@dataclass
class ClaimReport:
    """Every claim checked on a report's tables, the key tests corrected together."""

    #: table slug -> its checked claims
    by_table: dict[str, list[Checked]] = field(default_factory=dict)
    #: the size of each Holm family: key tests of the claims that passed the seed, key and learned rules
    tests: int = 0

    def rules(self) -> str:
        """The rules and the correction, said once above the claims."""
        return (f"Decided only with at least {MIN_SEEDS} seeds per side, every key measured and both methods passing "
                f"the learned tests of the claim's keys. Per key a one-sided Welch t test in the claimed direction "
                f"(and one of the reverse); the {self.tests} key test(s) of this report corrected together by "
                f"{CORRECTION}, each direction one family; a key decides at corrected p < {ALPHA} with a change "
                f"beyond {TOLERANCE:.0%}.")


def registered() -> list[Claim]:
    return [CLAIMS.get(n) for n in CLAIMS]


def _seed_values(row: Row, key: str, values: dict[str, dict[str, Value]]) -> list[float]:
    return [values[r.run_id][key].value for r in row.runs
            if key in values[r.run_id] and values[r.run_id][key].value is not None]


def _seeds_reason(a: Row, b: Row, counts: list[tuple[int, int]]) -> str | None:
    na, nb = min(n for n, _ in counts), min(n for _, n in counts)
    if min(na, nb) >= MIN_SEEDS:
        return None
    have = (f"{na} seed{'s' if na > 1 else ''} per side" if na == nb
            else f"{a.label} has {na} seed{'s' if na > 1 else ''}, {b.label} {nb}")
    return f"{have}: run --seeds {','.join(map(str, range(MIN_SEEDS)))}"


def _prepare(claim: Claim, a: Row, b: Row, values: dict[str, dict[str, Value]]
             ) -> tuple[Checked, dict[str, tuple[list[float], list[float]]]]:
    """The claim on one pair of rows before any test (evidence, and the reasons it cannot be decided), and each
    compared key's seed values of the two rows."""
    evidence, reasons, seeds = [], [], {}
    for k in claim.keys:
        ca, cb = a.cells.get(k), b.cells.get(k)
        shown = [format_cell(c) if c is not None else MISSING_TEXT for c in (ca, cb)]
        absent: dict[str, list[str]] = {}
        for row, c in ((a, ca), (b, cb)):
            if c is None or c.status != OK:
                absent.setdefault("n/a" if c is not None and c.status == NA else "not measured", []).append(row.label)
        if absent:
            reasons.append(f"{k} " + "; ".join(f"{why} for {' and '.join(rows)}" for why, rows in absent.items()))
            evidence.append(KeyEvidence(k, *shown))
            continue
        xa, xb = _seed_values(a, k, values), _seed_values(b, k, values)
        (da, d), (db, _) = as_lower(xa, direction(k)), as_lower(xb, direction(k))
        rel = relative_change(statistics.fmean(db), statistics.fmean(da))
        change = ("|ln x| " if direction(k) == CLOSEST_TO_1 else "") + f"{rel:+.1%}"
        evidence.append(KeyEvidence(k, *shown, change, -rel if d == LOWER else rel))
        seeds[k] = (xa, xb)
    if seeds and (few := _seeds_reason(a, b, [(len(xa), len(xb)) for xa, xb in seeds.values()])):
        reasons.append(few)
    for row in (a, b):
        found = outcomes(row.runs, values, claim.keys)
        if failed := [f"{o.what} ({o.reason})" for o in found if o.passed is False]:
            reasons.append(f"{row.label} has not learned {' or '.join(failed)}")
        if unknown := [f"{o.what} ({o.reason})" for o in found if o.passed is None]:
            reasons.append(f"whether {row.label} has learned {' or '.join(unknown)} is unknown")
    return Checked(claim, a.label, b.label, UNDECIDED, tuple(evidence), tuple(reasons)), seeds


def _key_verdict(e: KeyEvidence) -> str:
    """A tested key: significant after Holm's correction and beyond the tolerance, one way or the other."""
    if e.p_holm < ALPHA and e.gain > TOLERANCE:
        return SUPPORTED
    if e.p_holm_reverse < ALPHA and -e.gain > TOLERANCE:
        return NOT_SUPPORTED
    return UNDECIDED


def _claim_verdict(verdicts: set[str]) -> str:
    if verdicts == {SUPPORTED}:
        return SUPPORTED
    return NOT_SUPPORTED if NOT_SUPPORTED in verdicts and SUPPORTED not in verdicts else UNDECIDED


def check_all(tables: list[Table], values: dict[str, dict[str, Value]],
              claims: list[Claim] | None = None) -> ClaimReport:
    """Every claim (default: the registered ones) on every table holding both its methods, for every pair of their
    rows; the key tests of all of them corrected together (see the module docstring)."""
    claims = registered() if claims is None else claims
    prepared = []
    for table in tables:
        for claim in claims:
            pairs = itertools.product([r for r in table.rows if r.variant == claim.better],
                                      [r for r in table.rows if r.variant == claim.than])
            prepared += [(table.slug, *_prepare(claim, a, b, values)) for a, b in pairs]
    tested = [(i, k) for i, (_, c, seeds) in enumerate(prepared) if not c.reasons for k in seeds]
    p = {(i, k): one_sided_welch(*prepared[i][2][k], direction(k)) for i, k in tested}
    corrected = dict(zip(tested, zip(holm([p[t][0] for t in tested]), holm([p[t][1] for t in tested]))))
    report = ClaimReport(tests=len(tested))
    for i, (slug, c, _) in enumerate(prepared):
        if not c.reasons:
            evidence = []
            for e in c.evidence:
                e = replace(e, p_value=p[i, e.key][0], p_reverse=p[i, e.key][1], p_holm=corrected[i, e.key][0],
                            p_holm_reverse=corrected[i, e.key][1])
                evidence.append(replace(e, verdict=_key_verdict(e)))
            c = replace(c, evidence=tuple(evidence), verdict=_claim_verdict({e.verdict for e in evidence}))
        report.by_table.setdefault(slug, []).append(c)
    return report


def _tested(e: KeyEvidence) -> str:
    if e.p_value is None:
        return ""
    if e.verdict == NOT_SUPPORTED:
        return f"reverse one-sided p={e.p_reverse:.2g}, Holm {e.p_holm_reverse:.2g}"
    return f"one-sided p={e.p_value:.2g}, Holm {e.p_holm:.2g}"


def describe(c: Checked) -> str:
    """One line: verdict, the claim, per key the two cells with the change and the corrected p-value, and why a claim
    could not be decided."""
    parts = []
    for e in c.evidence:
        detail = ", ".join(x for x in (e.change, _tested(e)) if x)
        parts.append(f"{e.key}: {c.better} {e.better} vs {c.than} {e.than}" + (f" ({detail})" if detail else ""))
    why = f" Undecided: {'; '.join(c.reasons)}." if c.reasons else ""
    return f"{c.verdict.upper()}: {c.claim.text} [{c.claim.source}]. {'; '.join(parts)}.{why}"
