"""Seed statistics of one metric key: Welch's t test (scipy), a prediction interval for one run against many,
or the tolerance alone; and the tolerances per key."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

from scipy import stats as sps

from .errors import UsageError
from .provenance import HIGHER, LOWER

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


