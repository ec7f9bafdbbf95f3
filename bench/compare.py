"""Regression verdicts: pick two sets of runs with selectors, compare every metric with seed statistics.

Selector grammar (one string, terms joined by commas; a run must satisfy every term)::

    SELECTOR := TERM ("," TERM)*
    TERM     := FIELD "=" VALUE ("|" VALUE)*      run matches any of the values
              | FIELD "!=" VALUE ("|" VALUE)*     run matches none of them
              | WORD                              shorthand for variant=WORD

Fields: ``method`` (the registered method, so ``method=faae`` covers every faae variant), ``variant``
(the run's label: the variant name, or the method name for a plain run), ``dataset``, ``protocol``,
``code`` (code version, matched as a prefix: ``code=git:abc123`` covers ``git:abc123…`` and its ``-dirty``
form; ``code=current`` is the version of the code running now), ``tag``, ``seed``, ``config`` (config-hash
prefix) and ``run`` (run id). Values match exactly, or as globs with ``*`` and ``?`` (square brackets are
literal, since variant names hold them). Commas and ``|`` inside [...] belong to the value, e.g.
``variant=faae[loss.rec_weight=0,train.max_steps=30],dataset=mnist5k``.

Verdicts, per (method, dataset, metric key): the change is read in the key's direction (metrics.direction:
lower- or higher-is-better) against a relative tolerance (default 5%, ``--tolerance KEY=REL``).

- several seeds on both sides: Welch's t test (scipy.stats); "regressed"/"improved" need p < alpha AND a
  change beyond the tolerance; significant but smaller changes are "within tolerance";
- several seeds on one side, one on the other: the single value is tested against the spread of the
  many (a prediction interval, t with n-1 degrees of freedom), with the same two conditions;
- one seed per side: there is no seed variance; the verdict is the tolerance alone, and the output says so.

Wall-clock keys (``*per_s*``, ``*seconds*``) get no tolerance by default: they are shown as "not gated",
since on a shared machine they move with the load; ``--tolerance train_images_per_s=0.2`` gates on one.
A candidate run that diverged counts as a regression.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import strict_json
from .cli import UsageError
from .variants import split_top_level

DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.05
#: default tolerances per key glob. Wall-clock numbers (throughput, seconds) move with the load of the machine
#: more than with the code, so they are reported but not gated unless a --tolerance is given for them.
DEFAULT_TOLERANCES: dict[str, float] = {"*": DEFAULT_TOLERANCE, "*per_s*": math.inf, "*seconds*": math.inf}

IMPROVED, REGRESSED, NOISE, WITHIN_TOL = "improved", "regressed", "within noise", "within tolerance"
NOT_GATED = "not gated"
VERDICTS = (REGRESSED, IMPROVED, NOISE, WITHIN_TOL, NOT_GATED)


# --- selectors ------------------------------------------------------------------------------------------
def _glob(pattern: str, text: str) -> bool:
    if pattern == text:
        return True
    if "*" not in pattern and "?" not in pattern:
        return False
    return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))


def _match_code(pattern: str, version: str) -> bool:
    if pattern == "current":
        from .provenance import code_version

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
    from .store import Store

    out = []
    for r in store.runs():
        if r["status"] not in statuses:
            continue
        rec = RunRecord(
            run_id=r["run_id"], method=r["method"], variant=r["variant"], dataset=r["dataset"],
            protocol=r["protocol"], seed=r["seed"], config_hash=r["config_hash"], code_version=r["code_version"],
            status=r["status"], tags=Store.split_tags(r["tags"]), device=r["device"], dtype=r["dtype"],
            created=r["created"], config=json.loads(r["config_json"]), packages=json.loads(r["packages_json"]))
        if selector.matches(rec.as_selectable()):
            out.append(rec)
    rows = store.metric_rows([r.run_id for r in out]) if out else []
    by_id = {r.run_id: r for r in out}
    for m in rows:
        by_id[m["run_id"]].metrics[m["key"]] = {"metric": m["metric"], "value": m["value"],
                                                "provenance": m["provenance"]}
    return out


# --- statistics -------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """The comparison of one metric key: candidate minus baseline, read in the key's direction."""

    n_base: int
    n_cand: int
    mean_base: float
    mean_cand: float
    std_base: float | None
    std_cand: float | None
    diff: float
    rel: float  # diff / |mean_base| (inf when the baseline mean is 0 and the candidate differs)
    direction: str  # "lower" or "higher" is better
    tolerance: float
    test: str  # "welch", "prediction" or "tolerance"
    p_value: float | None
    ci_low: float | None  # 95%-style interval (1 - alpha) of the difference; None without seed variance
    ci_high: float | None
    verdict: str
    note: str = ""


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _t_test(diff: float, se: float, df: float, alpha: float) -> tuple[float, float, float]:
    """Two-sided p value and the (1 - alpha) interval of a difference with standard error se."""
    from scipy import stats

    if se == 0:
        # no spread at all: any difference is certain, none is none
        return (1.0 if diff == 0 else 0.0), diff, diff
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return p, diff - half, diff + half


def compare_values(base: list[float], cand: list[float], direction: str = "lower",
                   tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA) -> Stats:
    """The verdict for one metric key from per-seed values on each side (see the module docstring)."""
    from metrics.base import HIGHER, LOWER

    if direction not in (LOWER, HIGHER):
        raise ValueError(f"direction must be {LOWER!r} or {HIGHER!r}, got {direction!r}")
    if not base or not cand:
        raise ValueError("both sides need at least one value")
    nb, nc = len(base), len(cand)
    mb, mc = _mean(base), _mean(cand)
    sb, sc = _std(base), _std(cand)
    diff = mc - mb
    rel = diff / abs(mb) if mb != 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    worse = diff > 0 if direction == LOWER else diff < 0
    beyond = abs(rel) > tolerance
    p = lo = hi = None
    if nb >= 2 and nc >= 2:
        test = "welch"
        vb, vc = sb**2 / nb, sc**2 / nc
        se = math.sqrt(vb + vc)
        # Welch-Satterthwaite degrees of freedom
        df = (vb + vc) ** 2 / ((vb**2 / (nb - 1) if vb else 0) + (vc**2 / (nc - 1) if vc else 0) or 1)
        p, lo, hi = _t_test(diff, se, df, alpha)
        note = f"Welch t test over {nb} vs {nc} seeds"
    elif nb >= 2 or nc >= 2:
        # one side has a single run: test it against the spread of the other side's seeds
        test = "prediction"
        many, n = (sb, nb) if nb >= 2 else (sc, nc)
        se = many * math.sqrt(1 + 1 / n)
        p, lo, hi = _t_test(diff, se, n - 1, alpha)
        note = f"1 seed vs {n}: seed variance from the {n}-seed side only"
    else:
        test = "tolerance"
        note = "1 seed per side: no seed variance, verdict from the tolerance alone"
    significant = p is None or p < alpha
    if math.isinf(tolerance):
        verdict = NOT_GATED
    elif significant and beyond:
        verdict = REGRESSED if worse else IMPROVED
    elif significant:
        verdict = WITHIN_TOL
    else:
        verdict = NOISE
    return Stats(nb, nc, mb, mc, sb, sc, diff, rel, direction, tolerance, test, p, lo, hi, verdict, note)


# --- tolerances ---------------------------------------------------------------------------------------------
def parse_tolerances(items: list[str]) -> dict[str, float]:
    """['recon_mse=0.02', 'fid*=0.1'] -> {glob: relative tolerance}, on top of DEFAULT_TOLERANCES."""
    out = dict(DEFAULT_TOLERANCES)
    for item in items:
        key, sep, value = item.partition("=")
        try:
            rel = float(value)
        except ValueError:
            rel = -1.0
        if not sep or not key.strip() or not rel >= 0:
            raise UsageError(f"--tolerance {item!r} must look like KEY=REL with REL a relative change >= 0 "
                             f"(e.g. recon_mse=0.05 for 5%; KEY may be a glob like 'fid*')")
        out.pop(key.strip(), None)  # re-inserted last: what the user gives wins over the defaults
        out[key.strip()] = rel
    return out


def tolerance_for(key: str, tolerances: dict[str, float]) -> float:
    """The exact key's tolerance, else that of the last matching glob (user globs come after the defaults)."""
    if key in tolerances:
        return tolerances[key]
    hits = [p for p in tolerances if fnmatch.fnmatchcase(key, p)]
    return tolerances[hits[-1]] if hits else DEFAULT_TOLERANCE


# --- provenance -----------------------------------------------------------------------------------------
#: provenance entries that say how a number was measured: two numbers that differ in one are not comparable.
#: Metrics also record outcome diagnostics (solver iterations, timings, intermediate statistics), which may
#: differ between any two runs; those are listed in a note, never refused.
MEASUREMENT_KEYS = (
    "metric", "implementation", "function", "version", "reduction", "unit", "reference",
    "dataset", "split", "*_split", "resolution", "resize*", "image_format", "pixel_range", "data_range", "input_range",
    "n_images", "n_images_*", "n_samples", "n_latents", "n_real", "n_generated", "n_train", "n_test", "n_reference*",
    "n_classes", "kid_subset*", "kid_seed", "prior", "latent_dim", "feature_dim", "feature_extractor", "feature_layer",
    "feature_mode", "net", "k", "space", "weights", "weights_sha256", "*sha256*", "*hash*",
)
#: the digests of the images a value was computed on: different splits are refused unless asked for (other_splits)
SPLIT_DIGESTS = ("*split_sha256",)
#: entries that may differ, with a warning: the same measurement on other hardware, arithmetic or package versions
WARN_PROVENANCE = ("device", "dtype", "*_dtype", "*_device", "*_version", "torch_fidelity", "lpips")
#: entries that differ between comparable runs by design, not even worth a note
IGNORED_PROVENANCE = ("seed", "eval_seconds", "run_dir")


class ProvenanceMismatch(UsageError):
    """Two sets of numbers that were not measured the same way: comparing them would mislead."""


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _is_setting(key: str) -> bool:
    return _matches(key, MEASUREMENT_KEYS) and not _matches(key, WARN_PROVENANCE)


def _settings(prov: dict[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: json.dumps(v, sort_keys=True) for k, v in prov.items() if _is_setting(k) and not _matches(k, ignore)}


def _describe_difference(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    sa, sb = _settings(a, ignore), _settings(b, ignore)
    return "; ".join(f"{k}: {a.get(k, '(absent)')!r} vs {b.get(k, '(absent)')!r}"
                     for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k))


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
class Row:
    label: str  # "faae" or "faae -> faae[loss.rec_weight=0]"
    dataset: str
    key: str
    stats: Stats


@dataclass
class Comparison:
    baseline: Side
    candidate: Side
    rows: list[Row]
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
    from metrics import direction

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
            keys = list(dict.fromkeys(k for r in [*bd, *cd] for k in r.metrics))
            for key in keys:
                b_vals = [r.metrics[key] for r in bd if key in r.metrics]
                c_vals = [r.metrics[key] for r in cd if key in r.metrics]
                if not _key_selected(key, (b_vals or c_vals)[0]["metric"], patterns):
                    continue
                bn = [v["value"] for v in b_vals if v["value"] is not None]
                cn = [v["value"] for v in c_vals if v["value"] is not None]
                if not bn or not cn:
                    role, vals = ("baseline", b_vals) if not bn else ("candidate", c_vals)
                    why = "n/a" if vals else "not measured"
                    out.not_compared.append(f"{label} on {ds}: {key} ({why} on the {role} side)")
                    continue
                tol = tolerance_for(key, tolerances)
                _check_provenance(label, ds, key, b_vals, c_vals, out, gated=not math.isinf(tol),
                                  ignore=SPLIT_DIGESTS if other_splits else ())
                stats = compare_values(bn, cn, direction(key), tol, alpha)
                out.rows.append(Row(label, ds, key, stats))
    if patterns and not out.rows:
        raise UsageError(f"--metrics {','.join(patterns)} matches no metric both sides measured")
    return out


def _check_provenance(label: str, ds: str, key: str, b_vals: list[dict], c_vals: list[dict], out: Comparison,
                      gated: bool, ignore: tuple[str, ...] = ()) -> None:
    """Refuse numbers measured differently (see MEASUREMENT_KEYS) except in the `ignore` fields, which are warned
    about; warn about hardware; note diagnostics."""
    ref = b_vals[0]["provenance"]
    for role, vals in (("baseline", b_vals), ("candidate", c_vals)):
        for v in vals:
            if _settings(v["provenance"], ignore) == _settings(ref, ignore):
                continue
            where = "within the baseline" if role == "baseline" else "between baseline and candidate"
            text = (f"{key} of {label} on {ds} measured differently {where} "
                    f"({_describe_difference(ref, v['provenance'], ignore)})")
            if not gated:
                out.warnings.append(f"{text}; shown, not gated")
                return
            raise ProvenanceMismatch(f"refusing to compare: {text}. Compare runs evaluated the same way, or "
                                     f"leave this metric out with --metrics")
    provs = [v["provenance"] for v in [*b_vals, *c_vals]]
    for k in sorted({k for p in provs for k in p if _matches(k, ignore)}):
        seen = sorted({str(p.get(k)) for p in provs})
        if len(seen) > 1 and not any(w.startswith(f"values from different splits ({k}") for w in out.warnings):
            out.warnings.append(f"values from different splits ({k}: {', '.join(seen)}), compared as asked")
    fields = sorted({k for p in provs for k in p} - set(IGNORED_PROVENANCE))
    varying = [k for k in fields if not _is_setting(k) and len({json.dumps(p.get(k)) for p in provs}) > 1]
    for k in varying:
        if _matches(k, WARN_PROVENANCE):
            seen = sorted({json.dumps(p.get(k)) for p in provs})
            if not any(w.startswith(f"runs differ in {k} ") for w in out.warnings):
                out.warnings.append(f"runs differ in {k} ({', '.join(seen)}): numbers may move with it")
    diagnostics = [k for k in varying if not _matches(k, WARN_PROVENANCE)]
    if diagnostics:
        out.diagnostics.setdefault(key, diagnostics)


# --- rendering --------------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _cell_mean(mean: float, std: float | None) -> str:
    return _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std, 2)}"


def _basis(s: Stats) -> str:
    tol = "no tol (timing)" if math.isinf(s.tolerance) else f"tol {s.tolerance:.0%}"
    if s.test == "tolerance":
        return f"{tol}, 1 seed/side"
    return f"{s.test} p={s.p_value:.2g}, {tol}"


def table_rows(c: Comparison) -> list[dict[str, str]]:
    rows = []
    for r in c.rows:
        s = r.stats
        ci = "-" if s.ci_low is None else f"[{_fmt(s.ci_low, 3)}, {_fmt(s.ci_high, 3)}]"
        rel = "-" if s.rel == 0 else ("inf" if math.isinf(s.rel) else f"{s.rel:+.1%}")
        rows.append({"method": r.label, "dataset": r.dataset, "metric": r.key, "better": s.direction,
                     "baseline": _cell_mean(s.mean_base, s.std_base), "candidate": _cell_mean(s.mean_cand, s.std_cand),
                     "change": rel, f"{1 - c.alpha:.0%} CI of diff": ci, "basis": _basis(s),
                     "verdict": s.verdict.upper() if s.verdict == REGRESSED else s.verdict})
    return rows


def render(c: Comparison, fmt: str = "text") -> str:
    """fmt: "text" (aligned table), "markdown" (GitHub table, e.g. for a PR comment) or "json"."""
    if fmt == "json":
        return strict_json.dumps(to_json(c), indent=2)
    from tabulate import tabulate

    rows = table_rows(c)
    lines = []
    md = fmt == "markdown"
    for side in (c.baseline, c.candidate):
        lines.append(f"{'- ' if md else ''}{side.role}: {side.summary()}")
    if md:
        lines.append("")
    lines.append(tabulate(rows, headers="keys", tablefmt="github" if md else "simple", disable_numparse=True))
    notes = sorted({r.stats.note for r in c.rows})
    extra = [*[f"note: {n}" for n in notes], *[f"warning: {w}" for w in c.warnings],
             *[f"not compared: {n}" for n in c.not_compared], *[f"diverged: {d}" for d in c.diverged]]
    if c.diagnostics:
        extra.append("note: provenance diagnostics that differ between runs (not measurement settings): "
                     + "; ".join(f"{k}: {', '.join(v)}" for k, v in c.diagnostics.items()))
    if extra:
        lines.append("")
        lines += [f"- {e}" if md else e for e in extra]
    lines.append("")
    lines.append(f"**{c.summary_line()}**" if md else c.summary_line())
    return "\n".join(lines)


def to_json(c: Comparison) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        return {"source": s.source, "runs": [r.run_id for r in s.done()], "labels": s.labels(),
                "code_versions": list(dict.fromkeys(r.code_version for r in s.done()))}

    return {
        "baseline": side(c.baseline), "candidate": side(c.candidate), "alpha": c.alpha,
        "rows": [{"method": r.label, "dataset": r.dataset, "key": r.key,
                  **asdict(r.stats)} for r in c.rows],
        "counts": c.counts(), "warnings": c.warnings, "not_compared": c.not_compared, "diverged": c.diverged,
        "diagnostics": c.diagnostics,
        "regressed": c.regressed, "summary": c.summary_line(),
    }


# --- tags -------------------------------------------------------------------------------------------------
TAG_RE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")


def check_tags(tags: list[str]) -> list[str]:
    """--tag values: one word each (letters, digits and _ . : + -), since the store keeps them comma-joined."""
    for t in tags:
        if not TAG_RE.match(t):
            raise UsageError(f"--tag {t!r} may hold letters, digits and _ . : + - only")
    return sorted(set(tags))
