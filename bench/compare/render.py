"""Rendering a comparison: an aligned text table, a GitHub markdown table, or strict JSON."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from ..core import strict_json
from ..core.stats import REGRESSED, Stats
from .verdicts import Comparison, Side


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


