"""One metric of a method across code versions: the frame of its runs, the summary per version and the plot
(pandas, seaborn), for `bench history`."""

from __future__ import annotations

from pathlib import Path


def history_frame(records, key: str):
    """One row per run that measured `key`; code versions ordered by their first run."""
    import pandas as pd

    rows = [{"code_version": r.code_version, "dataset": r.dataset, "protocol": r.protocol, "seed": r.seed,
             "created": r.created, "value": r.values[key].value}
            for r in records if key in r.values and r.values[key].value is not None]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first = df.groupby("code_version")["created"].min().sort_values()
    order = list(first.index)
    df["code_version"] = pd.Categorical(df["code_version"], categories=order, ordered=True)
    return df.sort_values(["code_version", "dataset", "created"])


def summarise(df):
    """Per (dataset, protocol, code version): runs, mean, std, min, max and the change from the previous version."""
    import pandas as pd

    g = df.groupby(["dataset", "protocol", "code_version"], observed=True)["value"]
    out = g.agg(runs="count", mean="mean", std="std", min="min", max="max").reset_index()
    first = df.groupby("code_version", observed=True)["created"].min()
    out["first_run_utc"] = [pd.Timestamp(first[c], unit="s").strftime("%Y-%m-%d %H:%M") for c in out["code_version"]]
    out["change"] = out.groupby(["dataset", "protocol"], observed=True)["mean"].pct_change()
    out["change"] = out["change"].map(lambda x: "" if pd.isna(x) else f"{x:+.1%}")
    return out[["dataset", "protocol", "code_version", "first_run_utc", "runs", "mean", "std", "min", "max", "change"]]


def plot(df, key: str, method: str, direction: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    versions = list(df["code_version"].cat.categories)
    # one line per dataset (and protocol, when several are shown): numbers of two protocols never share a line
    several = df["protocol"].nunique() > 1
    df = df.assign(series=[f"{d} ({p})" if several else d for d, p in zip(df["dataset"], df["protocol"])])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(versions) + 2), 3.8), layout="constrained")
    # one dot per seed, and the mean per version with a line through the versions in order
    sns.stripplot(data=df, x="code_version", y="value", hue="series", dodge=False, alpha=0.5, size=5, ax=ax,
                  legend=False)
    sns.pointplot(data=df, x="code_version", y="value", hue="series", errorbar="sd", markers="D", ax=ax)
    ax.get_legend().set_title(None)
    ax.set_xlabel("code version (order of first run)")
    ax.set_ylabel(f"{key} ({direction} is better)")
    ax.set_title(f"{method}: {key}")
    ax.tick_params(axis="x", labelrotation=20)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
