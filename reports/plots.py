"""Plots with seaborn (matplotlib's Agg backend): training losses per phase, metric values with their seed
spread, training throughput. Each plot is built from a tidy DataFrame, which is also its cache key."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from bench.core.tempfiles import atomic_write

from .results import Results, Run, key_order
from .tables import Table

#: bump when the plotting changes, so that cached PNGs are re-rendered
PLOT_VERSION = 3
THROUGHPUT_KEY = "train_images_per_s"
#: keys of this form go to the throughput plot rather than the metric plot
THROUGHPUT_SUFFIX = "images_per_s"


def loss_frame(runs: list[Run]) -> pd.DataFrame:
    """The "<phase>/loss" values of every logged step of every run's log.jsonl (method, seed, phase, step, loss)."""
    rows = []
    for r in runs:
        for rec in read_log(r.run_dir / "log.jsonl"):
            for k, v in rec.items():
                if k.endswith("/loss") and isinstance(v, (int, float)) and math.isfinite(v):
                    rows.append({"method": r.label, "seed": r.seed, "phase": k[: -len("/loss")],
                                 "step": int(rec["step"]), "loss": float(v)})
    return pd.DataFrame(rows, columns=["method", "seed", "phase", "step", "loss"])


def is_throughput(key: str) -> bool:
    return key.endswith(THROUGHPUT_SUFFIX)


def metric_frame(table: Table, results: Results) -> pd.DataFrame:
    """One row per (method, seed, key) with a value, in table order; throughput keys have their own plot."""
    rows = []
    for row in table.rows:
        for r in row.runs:
            for k in table.keys:
                v = results.values[r.run_id].get(k)
                if not is_throughput(k) and v is not None and v.value is not None and math.isfinite(v.value):
                    rows.append({"method": row.label, "seed": r.seed, "key": k, "value": v.value})
    return pd.DataFrame(rows, columns=["method", "seed", "key", "value"])


def throughput_frame(table: Table, results: Results) -> pd.DataFrame:
    """Images per second per run and key (train_images_per_s, encode_..., decode_... when stored). Training
    throughput falls back to the last `images_per_s` the runner logged in log.jsonl (the same quantity,
    from the run directory) when the store has none."""
    keys = [k for k in table.keys if is_throughput(k)]
    if THROUGHPUT_KEY not in keys:
        keys.insert(0, THROUGHPUT_KEY)
    rows = []
    for row in table.rows:
        for r in row.runs:
            for k in keys:
                v = results.values[r.run_id].get(k)
                if v is not None and v.value is not None and math.isfinite(v.value):
                    rows.append({"method": row.label, "seed": r.seed, "key": k, "images_per_s": v.value,
                                 "source": "store"})
                elif k == THROUGHPUT_KEY and (logged := _logged_throughput(r)) is not None:
                    rows.append({"method": row.label, "seed": r.seed, "key": k, "images_per_s": logged,
                                 "source": "log.jsonl"})
    return pd.DataFrame(rows, columns=["method", "seed", "key", "images_per_s", "source"])


def read_log(path: Path) -> list[dict]:
    """The records of a run's log.jsonl; a line cut short by a kill (the runner drops it on resume) is skipped."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
    return records


def _logged_throughput(run: Run) -> float | None:
    records = read_log(run.run_dir / "log.jsonl")
    last = records[-1] if records else {}
    return float(last["images_per_s"]) if "images_per_s" in last else None


def frame_key(kind: str, df: pd.DataFrame) -> str:
    text = f"{kind}|{PLOT_VERSION}|" + df.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # no "Software" chunk: the bytes depend on the data only
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight",
                                                   metadata={"Software": None}))
    finally:
        plt.close(fig)


def _setup():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def plot_losses(df: pd.DataFrame, path: Path) -> None:
    """One panel per phase; a line per method, mean over seeds with a +-1 sd band (no bootstrap: deterministic)."""
    sns = _setup()
    phases = list(dict.fromkeys(df["phase"]))
    methods = list(dict.fromkeys(df["method"]))
    g = sns.relplot(data=df, x="step", y="loss", hue="method", hue_order=methods, col="phase", col_order=phases,
                    col_wrap=min(3, len(phases)), kind="line", errorbar="sd", facet_kws={"sharey": False},
                    height=2.8, aspect=1.3)
    g.set_titles("phase {col_name}")
    g.figure.suptitle("Training loss per phase (mean ± sd over seeds)", y=1.02)
    _save(g.figure, path)


def _per_key_panels(df: pd.DataFrame, path: Path, y: str, wrap: int, summary: str, summary_kws: dict,
                    dot_kws: dict, ylabel: str, title: str) -> None:
    """One panel per metric key: a summary over seeds (mean +- sd) per method, each seed as a dot on top
    (no jitter: it would draw random numbers)."""
    sns = _setup()
    keys = key_order(list(dict.fromkeys(df["key"])))
    methods = list(dict.fromkeys(df["method"]))
    g = sns.FacetGrid(df, col="key", col_order=keys, col_wrap=min(wrap, len(keys)), sharex=False, sharey=False,
                      height=2.8, aspect=1.1)
    g.map_dataframe(getattr(sns, summary), x="method", y=y, order=methods, errorbar="sd", capsize=0.2, **summary_kws)
    g.map_dataframe(sns.stripplot, x="method", y=y, order=methods, jitter=False, zorder=5, **dot_kws)
    g.set_titles("{col_name}")
    g.set_axis_labels("", ylabel)
    g.set_xticklabels(rotation=30, ha="right")
    g.tight_layout()
    g.figure.suptitle(title, y=1.02)
    _save(g.figure, path)


def plot_metrics(df: pd.DataFrame, path: Path) -> None:
    """Each seed's value as a dot, mean +- sd as a point with error bar."""
    _per_key_panels(df, path, "value", 4, "pointplot", {"linestyle": "none", "color": "C0", "markers": "D"},
                    {"color": "0.3", "size": 5}, "value", "Metric values: seeds (dark grey), mean ± sd (blue)")


def plot_throughput(df: pd.DataFrame, path: Path) -> None:
    """Mean +- sd over seeds as a bar, each seed as a dot."""
    _per_key_panels(df, path, "images_per_s", 3, "barplot", {"color": "C2"}, {"color": "0.2", "size": 4},
                    "images / s", "Throughput (mean ± sd over seeds; dots: seeds)")
