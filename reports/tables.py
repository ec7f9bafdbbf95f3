"""Result tables: methods x metric keys, mean +- std over seeds, best per column, provenance as footnotes.

One table holds only numbers that can be compared: the runs of one dataset and protocol whose metric
provenance (image counts, split, resolution, dtype, weights...) agrees key by key. Runs that disagree go
into a further table of the same protocol, never into the same one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import html
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.core.paths import safe_name
from bench.core.provenance import CLOSEST_TO_1, HIGHER, LOWER
from bench.core.stats import log_distance
from metrics import METRICS, direction

from .learned import outcomes, tests_for
from .results import COUNT_FIELDS, DONE, RUN_SPECIFIC, Results, Run, Value, key_order, run_signature

OK, NA, MISSING = "ok", "n/a", "missing"
NA_TEXT, MISSING_TEXT = "n/a", "—"
ARROW = {LOWER: "↓", HIGHER: "↑", CLOSEST_TO_1: "→1"}
LATEX_ARROW = {LOWER: r"$\downarrow$", HIGHER: r"$\uparrow$", CLOSEST_TO_1: r"$\to 1$"}
#: after a cell whose row fails a learned test that gates the column (reports.learned)
NOT_LEARNED = "†"


@dataclass(frozen=True)
class Cell:
    status: str
    mean: float | None = None
    #: sample standard deviation (ddof=1) over seeds; None for a single seed
    std: float | None = None
    n: int = 0
    best: bool = False


def aggregate(values: Sequence[float | None]) -> Cell:
    """One cell from the values of a row's seeds: None entries are n/a (capability missing)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return Cell(NA if values else MISSING)
    std = statistics.stdev(got) if len(got) > 1 else None
    return Cell(OK, statistics.fmean(got), std, len(got))


#: how good a column's mean is, lower being better, per direction: a ratio closest to 1 by its distance |ln x|
BADNESS = {LOWER: lambda m: m, HIGHER: lambda m: -m, CLOSEST_TO_1: log_distance}


def mark_best(cells: Sequence[Cell], direction: str) -> list[Cell]:
    """Mark the best mean of a column (ties all marked); a column with fewer than two values marks none."""
    def ranked(c: Cell) -> bool:
        return c.status == OK and c.mean is not None and math.isfinite(c.mean)

    badness = BADNESS[direction]
    scores = [badness(c.mean) for c in cells if ranked(c)]
    if len(scores) < 2:
        return list(cells)
    return [Cell(c.status, c.mean, c.std, c.n, ranked(c) and badness(c.mean) == min(scores)) for c in cells]


def significant(value: float, digits: int) -> str:
    """`digits` significant digits, trailing zeros kept (0.2270), no bare trailing point (1430, not 1430.)."""
    text = f"{value:#.{digits}g}"
    return text.replace(".e", "e").rstrip(".") if "." in text else text


def format_cell(cell: Cell, pm: str = "±") -> str:
    if cell.status == NA:
        return NA_TEXT
    if cell.status == MISSING:
        return MISSING_TEXT
    text = significant(cell.mean, 4)
    if cell.std is not None:
        text += f" {pm} {significant(cell.std, 2)}"
    return text


@dataclass
class Row:
    label: str
    variant: str
    method: str
    setting: str
    runs: list[Run]
    cells: dict[str, Cell] = field(default_factory=dict)
    #: learned tests (reports.learned) the row fails -> what it has not learned and why; its gated cells are marked
    unlearned: dict[str, str] = field(default_factory=dict)

    def learned(self, key: str) -> bool:
        """False when the row fails a learned test that the key's values depend on."""
        return not any(t.name in self.unlearned for t in tests_for(key))


@dataclass
class Table:
    dataset: str
    protocol: str
    #: 1-based position among the tables of this dataset and protocol, and their number
    part: int
    parts: int
    keys: list[str]
    rows: list[Row]
    #: key -> the provenance fields all its values share (seed, device, timings removed)
    provenance: dict[str, dict[str, Any]]
    #: key -> names of provenance fields that differ between its values (measurements of each run)
    varying: dict[str, list[str]]
    #: key -> metric name
    metric_of: dict[str, str]
    footnotes: list[str] = field(default_factory=list)
    #: "" for the whole table, else the name of a view (see VIEWS): the same rows, a subset of the keys
    view: str = ""

    @property
    def runs(self) -> list[Run]:
        return [r for row in self.rows for r in row.runs]

    @property
    def slug(self) -> str:
        """File-name stem and anchor of the table; dataset and protocol come from the store, so made safe."""
        suffix = f"-{self.part}" if self.parts > 1 else ""
        view = f"-{self.view}" if self.view else ""
        return safe_name(f"{self.dataset}-{self.protocol}{suffix}{view}")

    @property
    def title(self) -> str:
        part = f" (part {self.part} of {self.parts}: evaluation settings differ)" if self.parts > 1 else ""
        view = f": {self.view}" if self.view else ""
        return f"{self.dataset}, protocol {self.protocol}{part}{view}"

    def views(self) -> list[Table]:
        """The main table (the few numbers a paper prints) and one detail table per family of keys, each narrow
        enough for a page; every key of the table is in exactly one family."""
        out = []
        main = [k for k in MAIN_KEYS if k in self.keys]
        if main:
            out.append(dataclasses.replace(self, keys=main, view="main"))
        taken: set[str] = set()
        for name, patterns in FAMILIES.items():
            keys = [k for k in self.keys if k not in taken and any(fnmatch.fnmatchcase(k, p) for p in patterns)]
            taken.update(keys)
            if keys:
                out.append(dataclasses.replace(self, keys=keys, view=name))
        return out


#: the main table's keys, with the short headers of the terminal summary
MAIN_KEYS: dict[str, str] = {
    "recon_mse": "MSE", "lpips": "LPIPS", "fid_samples": "FID", "fid_recon": "FID rec",
    "reencode_ratio": "re-enc", "recon_sharpness_ratio": "sharp",
}
#: detail tables: family -> key globs, in order; a key goes to the first family it matches ("*": the rest)
FAMILIES: dict[str, tuple[str, ...]] = {
    "reconstruction": ("recon_*", "lpips"),
    "recon-distribution": ("*_recon",),
    "generation": ("*_samples", "sample_*"),
    "latent": ("reencode_*", "cycle_*", "probe_*"),
    "speed": ("*_per_s",),
    "other": ("*",),
}


# --- building -------------------------------------------------------------------------------------------
def _compatible(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def group_runs(results: Results) -> list[tuple[str, str, list[list[Run]]]]:
    """(dataset, protocol, groups of comparable runs) for the finished runs, in registry order.

    A run joins the first group whose provenance agrees with its own on every shared key; runs arrive in
    registry order, so the grouping is deterministic."""
    out: list[tuple[str, str, list[list[Run]]]] = []
    by_dp: dict[tuple[str, str], list[Run]] = {}
    for r in results.runs:
        if r.status == DONE:
            by_dp.setdefault((r.dataset, r.protocol), []).append(r)
    for (dataset, protocol), runs in by_dp.items():
        groups: list[tuple[dict[str, str], list[Run]]] = []
        for r in runs:
            sig = run_signature(results.values[r.run_id])
            for gsig, gruns in groups:
                if _compatible(gsig, sig):
                    gsig.update(sig)
                    gruns.append(r)
                    break
            else:
                groups.append((dict(sig), [r]))
        out.append((dataset, protocol, [g for _, g in groups]))
    return out


def build_rows(runs: list[Run], values: dict[str, dict[str, Value]], keys: list[str]) -> list[Row]:
    grouped: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        grouped.setdefault((r.label, r.setting), []).append(r)
    settings_per_label: dict[str, int] = {}
    for label, _ in grouped:
        settings_per_label[label] = settings_per_label.get(label, 0) + 1
    rows = []
    for (label, setting), rruns in grouped.items():
        shown = f"{label} (cfg {setting[:6]})" if settings_per_label[label] > 1 else label
        row = Row(shown, label, rruns[0].method, setting, rruns)
        for k in keys:
            present = [values[r.run_id][k].value for r in rruns if k in values[r.run_id]]
            row.cells[k] = aggregate(present)
        row.unlearned = {o.test: f"{o.what} ({o.reason})" for o in outcomes(rruns, values, keys) if o.passed is False}
        rows.append(row)
    for k in keys:
        marked = mark_best([row.cells[k] for row in rows], direction(k))
        for row, cell in zip(rows, marked):
            row.cells[k] = cell
    return rows


def _describe_provenance(prov: dict[str, Any]) -> str:
    first = [f"{k}={prov[k]}" for k in COUNT_FIELDS if k in prov]
    rest = [f"{k}={v}" for k, v in prov.items() if k not in COUNT_FIELDS]
    return "; ".join(first + rest)


def _footnotes(table: Table, values: dict[str, dict[str, Value]]) -> list[str]:
    notes = [
        "Cells: mean ± sample standard deviation (ddof=1) over seeds; a single seed shows the mean only. "
        "Bold: best mean per column (↓ lower is better, ↑ higher is better, →1 closest to 1: a ratio to the real "
        "images, ranked by |ln mean| so that 3.0 is as far off as 1/3; ties all bold; none with fewer than "
        f"two values). {NA_TEXT}: the method lacks a capability the metric requires. {MISSING_TEXT}: not evaluated. "
        f"{NOT_LEARNED}: the row's method fails a test of having learned what the column measures (reports.learned; "
        "claims on it are undecided).",
        "Each value is exactly comparable with values whose settings below agree: the same split digests "
        "(test_split_sha256: the exact held-out images), image counts, implementation and weights; "
        "comparable_with names a reference implementation where there is one.",
    ]
    # what differs between rows first, then what every value shares, then each key's own fields: nothing
    # stored is left out and no field is repeated on every line
    differing: dict[str, list[str]] = {}
    for k in table.keys:
        if table.varying.get(k):
            differing.setdefault(", ".join(table.varying[k]), []).append(k)
    if differing:
        notes.append("Differs between rows (each run's own measurement): "
                     + "; ".join(f"{', '.join(ks)}: {fields}" for fields, ks in differing.items()))
    provs = [table.provenance[k] for k in table.keys if table.provenance.get(k)]
    common = {f: v for f, v in provs[0].items() if all(f in p and p[f] == v for p in provs)} if len(provs) > 1 else {}
    if common:
        notes.append(f"Every value: {_describe_provenance(common)}")
    # keys with identical provenance share one note, in column order
    by_prov: dict[str, list[str]] = {}
    for k in table.keys:
        own = {f: v for f, v in table.provenance.get(k, {}).items() if f not in common}
        ident = [own, bool(table.provenance.get(k))]
        by_prov.setdefault(json.dumps(ident, sort_keys=True, default=str), []).append(k)
    for text, ks in by_prov.items():
        own, stored = json.loads(text)
        arrows = ", ".join(f"{k} {ARROW.get(direction(k), '')}".strip() for k in ks)
        desc = (_describe_provenance(own) if own else "as every value") if stored else \
            "no provenance stored (n/a or not evaluated)"
        notes.append(f"{arrows} [{table.metric_of.get(ks[0], '?')}]: {desc}")
    for row in table.rows:
        reasons: dict[str, list[str]] = {}
        for k in table.keys:
            if row.cells[k].status != NA:
                continue
            for r in row.runs:
                v = values[r.run_id].get(k)
                if v is not None and v.value is None:
                    reasons.setdefault(str(v.provenance.get("reason", "no reason stored")), []).append(k)
                    break
        for reason, ks in reasons.items():
            notes.append(f"{NA_TEXT} for {row.label}: {reason} ({', '.join(ks)})")
        for name, what in row.unlearned.items():
            if any(row.cells[k].status == OK and name in {t.name for t in tests_for(k)} for k in table.keys):
                notes.append(f"{NOT_LEARNED} {row.label} has not learned {what}")
        partial = [k for k in table.keys if row.cells[k].status == OK and row.cells[k].n < len(row.runs)]
        if partial:
            notes.append(f"{row.label}: {', '.join(partial)} from fewer seeds than the row's {len(row.runs)}")
    labels = [row for row in table.rows if row.label != row.variant]
    if labels:
        notes.append("Rows marked (cfg ...) are one method trained under different settings; "
                     "the settings are listed with the runs below.")
    return notes


def build_tables(results: Results) -> list[Table]:
    tables = []
    for dataset, protocol, groups in group_runs(results):
        for i, runs in enumerate(groups, 1):
            keys = key_order({k for r in runs for k in results.values[r.run_id]})
            metric_of: dict[str, str] = {}
            provs: dict[str, list[dict[str, Any]]] = {}
            for r in runs:
                for k, v in results.values[r.run_id].items():
                    metric_of.setdefault(k, v.metric)
                    if v.value is not None:
                        provs.setdefault(k, []).append({f: x for f, x in v.provenance.items() if f not in RUN_SPECIFIC})
            provenance, varying = {}, {}
            for k, ps in provs.items():
                fields = sorted({f for p in ps for f in p})
                same = [f for f in fields if all(f in p and p[f] == ps[0].get(f) for p in ps)]
                provenance[k] = {f: ps[0][f] for f in same}
                varying[k] = [f for f in fields if f not in same]
            rows = build_rows(runs, results.values, keys)
            table = Table(dataset, protocol, i, len(groups), keys, rows, provenance, varying, metric_of)
            table.footnotes = _footnotes(table, results.values)
            tables.append(table)
    return tables


def timing_frame(table: Table, values: dict[str, dict[str, Value]]) -> pd.DataFrame:
    """Where the time goes: seconds of training and of each metric's evaluation, one row per stage and one
    column per row of the table (mean over its seeds). Metrics whose every value is n/a are left out."""
    per_run: dict[str, dict[str, float]] = {}
    for r in table.runs:
        secs = {"training": r.train_seconds}
        for v in values[r.run_id].values():
            if v.value is not None and "eval_seconds" in v.provenance:
                secs[v.metric] = float(v.provenance["eval_seconds"])  # one per metric, repeated on each key
        secs["evaluation (total)"] = sum(t for k, t in secs.items() if k != "training")
        per_run[r.run_id] = secs
    measured = {k for secs in per_run.values() for k in secs}
    stages = ["training", *[n for n, _ in METRICS.items() if n in measured], "evaluation (total)"]
    data: dict[str, list[str]] = {"stage": stages}
    for row in table.rows:
        col = []
        for stage in stages:
            got = [per_run[r.run_id][stage] for r in row.runs if stage in per_run[r.run_id]]
            col.append(significant(statistics.fmean(got), 3) if got else MISSING_TEXT)
        data[row.label] = col
    return pd.DataFrame(data)


# --- rendering ------------------------------------------------------------------------------------------
def display_frame(table: Table, bold: tuple[str, str] = ("**", "**"), pm: str = "±",
                  escape=lambda s: s, arrows: dict[str, str] = ARROW) -> pd.DataFrame:
    """The table as strings: one row per method, one column per key, best cells wrapped in `bold`."""
    data: dict[str, list[str]] = {escape("method"): [escape(r.label) for r in table.rows],
                                  escape("seeds"): [str(len(r.runs)) for r in table.rows]}
    for k in table.keys:
        col = []
        for row in table.rows:
            c = row.cells[k]
            mark = NOT_LEARNED if c.status == OK and not row.learned(k) else ""
            text = escape(format_cell(c, pm) + mark)
            col.append(f"{bold[0]}{text}{bold[1]}" if c.best else text)
        data[f"{escape(k)} {arrows.get(direction(k), '')}".strip()] = col
    return pd.DataFrame(data)


def markdown_escape(text: str) -> str:
    """Text for Markdown: HTML special characters as entities (renderers pass raw HTML through) and table pipes
    escaped."""
    return html.escape(text, quote=False).replace("|", r"\|")


def frame_markdown(df: pd.DataFrame) -> str:
    """A frame of display strings as a Markdown table: the first column left-aligned, the numbers right."""
    return df.to_markdown(index=False, disable_numparse=True, colalign=["left"] + ["right"] * (df.shape[1] - 1))


def to_markdown(table: Table) -> str:
    return frame_markdown(display_frame(table, escape=markdown_escape))


def to_csv(table: Table) -> str:
    """Numbers for machines: mean, std, seed count and best flag per key; n/a as "n/a", not evaluated empty
    (pandas reads both as NaN)."""
    rows = []
    for row in table.rows:
        d: dict[str, Any] = {"method": row.label, "variant": row.variant, "setting": row.setting,
                             "seeds": len(row.runs)}
        for k in table.keys:
            c = row.cells[k]
            filler = NA_TEXT if c.status == NA else ""
            d[k] = c.mean if c.status == OK else filler
            d[f"{k}_std"] = c.std if c.std is not None else filler
            d[f"{k}_n"] = c.n
            d[f"{k}_best"] = c.best
        rows.append(d)
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--",
                  "±": r"$\pm$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\to$", NOT_LEARNED: r"$^\dagger$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (pandas Styler), its footnotes under the tabular."""
    df = display_frame(table, bold=(r"\textbf{", "}"), escape=latex_escape, arrows=LATEX_ARROW)
    body = df.style.hide(axis="index").to_latex(
        hrules=True, column_format="l" + "r" * (df.shape[1] - 1), position_float="centering",
        caption=latex_escape(table.title), label=f"tab:{table.slug}")
    notes = "\n".join(r"\par\footnotesize " + latex_escape(n) for n in table.footnotes)
    return body.replace(r"\end{table}", notes + "\n" + r"\end{table}")


def to_html(table: Table) -> str:
    df = display_frame(table, bold=("<strong>", "</strong>"), escape=html.escape)
    # long keys may break after an underscore, so that a table of several keys fits the page
    df.columns = [c.replace("_", "_<wbr>") for c in df.columns]
    return df.to_html(index=False, escape=False, border=0, classes="results", justify="right")
