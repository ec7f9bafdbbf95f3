"""Seed statistics of one metric key: Welch's t test (scipy), a prediction interval for one run against many,
or the tolerance alone; and the tolerances per key. For claims: one-sided Welch tests and Holm's correction
(statsmodels) of a family of them."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from .errors import UsageError
from .provenance import CLOSEST_TO_1, DIRECTIONS, LOWER

DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.05
#: default tolerances per key glob. Wall-clock numbers (throughput, seconds) move with the load of the machine
#: more than with the code, so they are reported but not gated unless a --tolerance is given for them.
DEFAULT_TOLERANCES: dict[str, float] = {"*": DEFAULT_TOLERANCE, "*per_s*": math.inf, "*seconds*": math.inf}

IMPROVED, REGRESSED, NOISE, WITHIN_TOL = "improved", "regressed", "within noise", "within tolerance"
NOT_GATED = "not gated"
VERDICTS = (REGRESSED, IMPROVED, NOISE, WITHIN_TOL, NOT_GATED)


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
    direction: str  # "lower", "higher" or "closest to 1" is better (the last compared as |ln x|: means, diff, CI)
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


#: a ratio of 0 (a flat image has no edges) has no logarithm: it counts as this, far from 1 (|ln| = 27.6)
RATIO_FLOOR = 1e-12


def log_distance(x: float) -> float:
    """Distance of a ratio from 1 on a log scale: 3.0 and 1/3 are equally far off."""
    return abs(math.log(max(x, RATIO_FLOOR)))


def as_lower(values: list[float], direction: str) -> tuple[list[float], str]:
    """Values and a direction the tests read: a key closest to 1 becomes its distance |ln x|, lower being better;
    lower and higher keys pass as they are."""
    if direction == CLOSEST_TO_1:
        return [log_distance(v) for v in values], LOWER
    return list(values), direction


def relative_change(base_mean: float, cand_mean: float) -> float:
    """(cand - base) / |base|; inf when the base is 0 and the candidate differs."""
    diff = cand_mean - base_mean
    return diff / abs(base_mean) if base_mean != 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))


def _t_test(diff: float, se: float, df: float, alpha: float) -> tuple[float, float, float]:
    """Two-sided p value and the (1 - alpha) interval of a difference with standard error se (the prediction
    interval of one run against the spread of many)."""
    if se == 0:
        # no spread at all: any difference is certain, none is none
        return (1.0 if diff == 0 else 0.0), diff, diff
    p = float(2 * sps.t.sf(abs(diff / se), df))
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    return p, diff - half, diff + half


def _welch(base: list[float], cand: list[float], alpha: float) -> tuple[float, float, float]:
    """scipy's Welch t test of cand - base: p value and the (1 - alpha) interval of the difference of means."""
    if _std(base) == 0 and _std(cand) == 0:  # scipy returns nan here; the difference is exact
        diff = _mean(cand) - _mean(base)
        return (1.0 if diff == 0 else 0.0), diff, diff
    res = sps.ttest_ind(cand, base, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    return float(res.pvalue), float(ci.low), float(ci.high)


def compare_values(base: list[float], cand: list[float], direction: str = "lower",
                   tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA) -> Stats:
    """The verdict for one metric key from per-seed values on each side (see the module docstring)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}")
    if not base or not cand:
        raise ValueError("both sides need at least one value")
    shown = direction
    (base, direction), (cand, _) = as_lower(base, shown), as_lower(cand, shown)
    nb, nc = len(base), len(cand)
    mb, mc = _mean(base), _mean(cand)
    sb, sc = _std(base), _std(cand)
    diff = mc - mb
    rel = relative_change(mb, mc)
    worse = diff > 0 if direction == LOWER else diff < 0
    beyond = abs(rel) > tolerance
    p = lo = hi = None
    if nb >= 2 and nc >= 2:
        test = "welch"
        p, lo, hi = _welch(base, cand, alpha)
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
    if shown == CLOSEST_TO_1:
        note += "; closest to 1 is better: compared as |ln x|"
    significant = p is None or p < alpha
    if math.isinf(tolerance):
        verdict = NOT_GATED
    elif significant and beyond:
        verdict = REGRESSED if worse else IMPROVED
    elif significant:
        verdict = WITHIN_TOL
    else:
        verdict = NOISE
    return Stats(nb, nc, mb, mc, sb, sc, diff, rel, shown, tolerance, test, p, lo, hi, verdict, note)


# --- claims: one-sided tests, corrected together ----------------------------------------------------------------
def one_sided_welch(better: list[float], than: list[float], direction: str) -> tuple[float, float]:
    """p-values of one-sided Welch t tests (scipy) that `better` beats `than` in the key's direction, and of the
    reverse (that `than` beats `better`). Each side needs at least 2 values."""
    if len(better) < 2 or len(than) < 2:
        raise ValueError("a Welch t test needs at least 2 values per side")
    (b, d), (t, _) = as_lower(better, direction), as_lower(than, direction)
    if _std(b) == 0 and _std(t) == 0:  # scipy returns nan here; the difference is exact
        gain = _mean(t) - _mean(b) if d == LOWER else _mean(b) - _mean(t)
        return (0.0 if gain > 0 else 1.0), (0.0 if gain < 0 else 1.0)
    claim, reverse = ("less", "greater") if d == LOWER else ("greater", "less")
    p, q = (float(sps.ttest_ind(b, t, equal_var=False, alternative=a).pvalue) for a in (claim, reverse))
    return p, q


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values of a family of tests decided together (statsmodels' multipletests): rejecting those
    below alpha keeps the chance of any false rejection in the family at most alpha."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, method="holm")[1]]


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


