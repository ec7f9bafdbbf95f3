"""The comparison: pair the two sides' runs, refuse numbers measured differently, a verdict per key."""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field

from metrics import direction

from ..core.errors import UsageError
from ..core.provenance import (
    IGNORED_PROVENANCE,
    SPLIT_DIGESTS,
    WARN_PROVENANCE,
    describe_difference,
    is_setting,
    matches_any,
    settings,
)
from ..core.records import RunRecord, StoredValue
from ..core.stats import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCES,
    IMPROVED,
    NOISE,
    NOT_GATED,
    REGRESSED,
    VERDICTS,
    WITHIN_TOL,
    Stats,
    compare_values,
    tolerance_for,
)


class ProvenanceMismatch(UsageError):
    """Two sets of numbers that were not measured the same way: comparing them would mislead."""


# --- the comparison ---------------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of a comparison: a description of where its runs came from, and the runs."""

    role: str  # "baseline" or "candidate"
    source: str  # e.g. "selector variant=faae in bench-out/results.db" or "baseline file baselines/x.json"
    records: list[RunRecord]

    def done(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "done"]

    def labels(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.done()))

    def summary(self) -> str:
        runs = self.done()
        seeds = sorted({r.seed for r in runs})
        codes = list(dict.fromkeys(r.code_version for r in runs))
        return (f"{self.source}: {len(runs)} run(s) of {', '.join(self.labels()) or '-'}; "
                f"seeds {','.join(map(str, seeds)) or '-'}; code {', '.join(codes) or '-'}")


@dataclass
class KeyVerdict:
    label: str  # "faae" or "faae -> faae[loss.rec_weight=0]"
    dataset: str
    key: str
    stats: Stats


@dataclass
class Comparison:
    baseline: Side
    candidate: Side
    rows: list[KeyVerdict]
    alpha: float
    warnings: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    #: key -> provenance entries that differ but are outcome diagnostics, not measurement settings
    diagnostics: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for r in self.rows:
            out[r.stats.verdict] += 1
        return out

    @property
    def regressed(self) -> bool:
        return bool(self.diverged) or any(r.stats.verdict == REGRESSED for r in self.rows)

    def summary_line(self) -> str:
        c = self.counts()
        datasets = sorted({r.dataset for r in self.rows})
        text = (f"{c[REGRESSED]} regressed, {c[IMPROVED]} improved, {c[NOISE]} within noise, "
                f"{c[WITHIN_TOL]} within tolerance, {c[NOT_GATED]} not gated "
                f"({len(self.rows)} comparisons on {', '.join(datasets)})")
        if self.diverged:
            text += f"; {len(self.diverged)} candidate run(s) diverged"
        return ("REGRESSION: " if self.regressed else "OK: ") + text


def _pairs(base: Side, cand: Side) -> list[tuple[str, str, str]]:
    """(row label, baseline label, candidate label): one pair if each side holds one label, else by label."""
    bl, cl = base.labels(), cand.labels()
    if len(bl) == 1 and len(cl) == 1:
        label = bl[0] if bl == cl else f"{bl[0]} -> {cl[0]}"
        return [(label, bl[0], cl[0])]
    return [(lbl, lbl, lbl) for lbl in bl if lbl in cl]


def _unpaired(base: Side, cand: Side) -> list[str]:
    bl, cl = base.labels(), cand.labels()
    if len(bl) == 1 and len(cl) == 1:
        return []
    return ([f"{lbl}: only in the baseline" for lbl in bl if lbl not in cl]
            + [f"{lbl}: only in the candidate" for lbl in cl if lbl not in bl])


def _key_selected(key: str, metric: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(metric, p) for p in patterns)


def compare(base: Side, cand: Side, metrics: list[str] | None = None, tolerances: dict[str, float] | None = None,
            alpha: float = DEFAULT_ALPHA, other_splits: bool = False) -> Comparison:
    """Every (pair, dataset, key) both sides measured, with verdicts; raises ProvenanceMismatch / UsageError.
    other_splits: compare values computed on different train/test splits (different split digests), with a warning."""
    tolerances = tolerances if tolerances is not None else dict(DEFAULT_TOLERANCES)
    patterns = metrics or []
    for side in (base, cand):
        if not side.done():
            raise UsageError(f"the {side.role} has no finished runs ({side.source})")
    pairs = _pairs(base, cand)
    if not pairs:
        raise UsageError(f"baseline and candidate share no method or variant to compare: baseline has "
                         f"{', '.join(base.labels())}, candidate has {', '.join(cand.labels())}; select one "
                         f"variant per side to compare two different ones")
    out = Comparison(base, cand, [], alpha)
    out.diverged = [r.run_id for r in cand.records if r.status == "diverged"]
    out.not_compared += _unpaired(base, cand)
    shared = ({(r.run_id, r.code_version, r.created) for r in base.done()}
              & {(r.run_id, r.code_version, r.created) for r in cand.done()})
    if shared:
        out.warnings.append(f"{len(shared)} run(s) are on both sides: their differences are zero by construction")
    for label, bl, cl in pairs:
        b_runs = [r for r in base.done() if r.variant == bl]
        c_runs = [r for r in cand.done() if r.variant == cl]
        datasets = list(dict.fromkeys(r.dataset for r in b_runs))
        c_datasets = {r.dataset for r in c_runs}
        if not set(datasets) & c_datasets:
            raise ProvenanceMismatch(f"{label}: the baseline is on dataset(s) {', '.join(datasets)}, the candidate "
                                     f"on {', '.join(sorted(c_datasets))}: nothing measured on the same data")
        for ds in datasets:
            bd = [r for r in b_runs if r.dataset == ds]
            cd = [r for r in c_runs if r.dataset == ds]
            if not cd:
                out.not_compared.append(f"{label} on {ds}: no candidate runs")
                continue
            protocols = {r.protocol for r in bd} | {r.protocol for r in cd}
            if len(protocols) > 1:
                raise ProvenanceMismatch(
                    f"{label} on {ds}: runs under different protocols ({', '.join(sorted(protocols))}); "
                    f"compare runs of one protocol (add protocol=NAME to the selectors)")
            keys = list(dict.fromkeys(k for r in [*bd, *cd] for k in r.values))
            for key in keys:
                b_vals = [r.values[key] for r in bd if key in r.values]
                c_vals = [r.values[key] for r in cd if key in r.values]
                if not _key_selected(key, (b_vals or c_vals)[0].metric, patterns):
                    continue
                bn = [v.value for v in b_vals if v.value is not None]
                cn = [v.value for v in c_vals if v.value is not None]
                if not bn or not cn:
                    role, vals = ("baseline", b_vals) if not bn else ("candidate", c_vals)
                    why = "n/a" if vals else "not measured"
                    out.not_compared.append(f"{label} on {ds}: {key} ({why} on the {role} side)")
                    continue
                tol = tolerance_for(key, tolerances)
                _check_provenance(label, ds, key, b_vals, c_vals, out, gated=not math.isinf(tol),
                                  ignore=SPLIT_DIGESTS if other_splits else ())
                stats = compare_values(bn, cn, direction(key), tol, alpha)
                out.rows.append(KeyVerdict(label, ds, key, stats))
    if patterns and not out.rows:
        raise UsageError(f"--metrics {','.join(patterns)} matches no metric both sides measured")
    return out


def _check_provenance(label: str, ds: str, key: str, b_vals: list[StoredValue], c_vals: list[StoredValue],
                      out: Comparison,
                      gated: bool, ignore: tuple[str, ...] = ()) -> None:
    """Refuse numbers measured differently (see MEASUREMENT_KEYS) except in the `ignore` fields, which are warned
    about; warn about hardware; note diagnostics."""
    ref = b_vals[0].provenance
    for role, vals in (("baseline", b_vals), ("candidate", c_vals)):
        for v in vals:
            if settings(v.provenance, ignore) == settings(ref, ignore):
                continue
            where = "within the baseline" if role == "baseline" else "between baseline and candidate"
            text = (f"{key} of {label} on {ds} measured differently {where} "
                    f"({describe_difference(ref, v.provenance, ignore)})")
            if not gated:
                out.warnings.append(f"{text}; shown, not gated")
                return
            raise ProvenanceMismatch(f"refusing to compare: {text}. Compare runs evaluated the same way, or "
                                     f"leave this metric out with --metrics")
    provs = [v.provenance for v in [*b_vals, *c_vals]]
    for k in sorted({k for p in provs for k in p if matches_any(k, ignore)}):
        seen = sorted({str(p.get(k)) for p in provs})
        if len(seen) > 1 and not any(w.startswith(f"values from different splits ({k}") for w in out.warnings):
            out.warnings.append(f"values from different splits ({k}: {', '.join(seen)}), compared as asked")
    fields = sorted({k for p in provs for k in p} - set(IGNORED_PROVENANCE))
    varying = [k for k in fields if not is_setting(k) and len({json.dumps(p.get(k)) for p in provs}) > 1]
    for k in varying:
        if matches_any(k, WARN_PROVENANCE):
            seen = sorted({json.dumps(p.get(k)) for p in provs})
            if not any(w.startswith(f"runs differ in {k} ") for w in out.warnings):
                out.warnings.append(f"runs differ in {k} ({', '.join(seen)}): numbers may move with it")
    diagnostics = [k for k in varying if not matches_any(k, WARN_PROVENANCE)]
    if diagnostics:
        out.diagnostics.setdefault(key, diagnostics)


