"""The short table printed at the end of `bench run`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def summary_table(store_path: str | Path, run_ids: list[str]) -> str:
    from bench.core.store import Store

    store = Store(store_path)
    runs = {r["run_id"]: r for r in store.runs()}
    rows = []
    for rid in run_ids:
        r = runs.get(rid)
        if r is None:
            continue
        row = {"method": r["variant"], "dataset": r["dataset"], "seed": r["seed"], "status": r["status"],
               "train_s": round(r["train_seconds"], 1)}
        for m in store.metric_rows([rid]):
            row[m["key"]] = m["value"]
        rows.append(row)
    if not rows:
        return "(no runs)"
    # NULL values (n/a) and metrics a run lacks both show as n/a, not nan
    df = pd.DataFrame(rows).astype(object)
    df = df.where(df.notna(), None)
    return df.to_markdown(index=False, floatfmt=".4g", missingval="n/a")
