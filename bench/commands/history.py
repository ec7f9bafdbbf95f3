"""`bench history --metric KEY --method NAME`: one metric across code versions, as a table and a PNG plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import command
from ..core.errors import UsageError
from ..core.paths import path_under
from .compare import add_store_args, store_paths


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", required=True, help="a result key, e.g. recon_mse (see the columns of `bench run`)")
    p.add_argument("--method", required=True, help="a method or variant name (the run's label)")
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset, one line each)")
    p.add_argument("--protocol", default=None, help="only this protocol")
    p.add_argument("--where", default="", help="further selector terms, e.g. 'tag=nightly' (see `bench compare --help`)")
    p.add_argument("--plot", default=None, help="PNG path (default: next to the store, history-METRIC-METHOD.png)")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    add_store_args(p)


def history_frame(records, key: str):
    """One row per run that measured `key`; code versions ordered by their first run."""
    import pandas as pd

    rows = [{"code_version": r.code_version, "dataset": r.dataset, "protocol": r.protocol, "seed": r.seed,
             "created": r.created, "value": r.metrics[key]["value"]}
            for r in records if key in r.metrics and r.metrics[key]["value"] is not None]
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


@command("history", "show one metric of a method across code versions (table and PNG plot)", _args)
def run(args: argparse.Namespace) -> int:
    from metrics import direction

    from ..baseline import describe_stores, records_from_stores
    from ..compare import parse_selector
    from ..core.store import Store

    stores = store_paths(args)
    terms = [f"variant={args.method}"]
    terms += [f"dataset={args.dataset}"] if args.dataset else []
    terms += [f"protocol={args.protocol}"] if args.protocol else []
    terms += [args.where] if args.where else []
    selector = parse_selector(",".join(terms))
    records = records_from_stores(stores, selector, statuses=("done",))
    if not records:
        labels = sorted({r["variant"] for p in stores for r in Store(p, readonly=True).runs()})
        raise UsageError(f"no finished runs match {selector} in {describe_stores(stores)}; methods and variants "
                         f"there: {', '.join(labels) or '(none)'}")
    keys = sorted({k for r in records for k in r.metrics})
    if args.metric not in keys:
        raise UsageError(f"no run of {selector} measured {args.metric!r}; keys there: {', '.join(keys)}")
    df = history_frame(records, args.metric)
    if df.empty:
        raise UsageError(f"{args.metric} is n/a for every run of {selector}")
    dirn = direction(args.metric)
    print(f"{args.metric} ({dirn} is better) of {args.method} across code versions, in order of first run:")
    print(summarise(df).to_markdown(index=False, floatfmt=".4g"))
    if not args.no_plot:
        where = stores[0].parent
        path = Path(args.plot) if args.plot else path_under(where, f"history-{args.metric}-{args.method}.png")
        try:
            print(f"plot: {plot(df, args.metric, args.method, dirn, path)}")
        except OSError as e:  # e.g. a read-only store directory, where the plot goes by default
            raise UsageError(f"cannot write the plot {path} ({e.strerror}); pass --plot FILE or --no-plot") from None
    return 0
