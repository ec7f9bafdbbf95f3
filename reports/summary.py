"""The table printed at the end of `bench run` and `bench eval`: the main numbers only, one row per run, at most
SUMMARY_WIDTH characters wide (`wide=True` prints every stored key instead)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.core.console import LINE_WIDTH
from bench.core.records import read_runs
from bench.core.store import Store

from .tables import MAIN_KEYS, significant

SUMMARY_WIDTH = LINE_WIDTH
LABEL_WIDTH = 22


def _cell(value: float | None) -> str:
    return "n/a" if value is None else significant(value, 3)


def summary_table(store_path: str | Path, run_ids: list[str], wide: bool = False) -> str:
    runs = {r.run_id: r for r in read_runs(Store(store_path, readonly=True), run_ids=run_ids)}
    rows: list[dict[str, str]] = []
    for rid in run_ids:
        r = runs.get(rid)
        if r is None:
            continue
        values = {k: v.value for k, v in r.values.items()}
        label = r.variant if len(r.variant) <= LABEL_WIDTH else r.variant[: LABEL_WIDTH - 1] + "…"
        row = {"method": label, "seed": str(r.seed), "status": r.status}
        keys = sorted(values) if wide else [k for k in MAIN_KEYS if k in values]
        for k in keys:
            row[k if wide else MAIN_KEYS[k]] = _cell(values[k])
        rows.append(row)
    if not rows:
        return "(no runs)"
    df = pd.DataFrame(rows).fillna("—")
    if not wide:  # the first columns that fit: a terminal table never wraps
        cols = list(df.columns)
        while len(cols) > 3 and max(len(line) for line in _render(df[cols]).splitlines()) > SUMMARY_WIDTH:
            cols.pop()
        df = df[cols]
    return _render(df)


def _render(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)
