"""Sweep throughput: the same grid of smoke runs through submitit's local executor with 1 worker and with 2.

    python benchmarks/sweep_speed.py                  # faae,aae x seeds 0,1 (4 runs), smoke protocol
    python benchmarks/sweep_speed.py --seeds 0,1,2,3  # 8 runs

Each configuration is a real `python -m bench sweep --executor local --workers N` in its own output directory,
timed from submission to the last run done (every run trained and evaluated once, checked in the store). The
sweep gives each job OMP_NUM_THREADS = cores / N, so 1 worker has both cores and 2 workers one each. Prints the
runs per minute of both and their ratio. Needs an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.core.store import Store  # noqa: E402
from benchmarks.cpu import cpu_name  # noqa: E402


def sweep(workers: int, args: argparse.Namespace, work: Path) -> tuple[float, int]:
    """Wall seconds of one sweep and the number of runs it finished."""
    out = work / f"workers-{workers}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(work / "cache")}
    env.pop("OMP_NUM_THREADS", None)  # the sweep sets it per job
    cmd = [sys.executable, "-m", "bench", "sweep", "--methods", args.methods, "--protocol", "smoke", "--seeds",
           args.seeds, "--executor", "local", "--workers", str(workers), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"sweep with {workers} worker(s) failed (exit {r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    runs = Store(out / "results.db", readonly=True).runs()
    return seconds, sum(1 for run in runs if run["status"] == "done")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="faae,aae")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    # the embedded dataset decoded once into the shared cache, outside the timed sweeps
    subprocess.run([sys.executable, "-c", "from bench.core.data import load_dataset; load_dataset('mnist5k')"],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(work / "cache")},
                   check=True)
    print(f"CPU: {cpu_name()}; work directory: {work}")
    rate = {}
    for workers in (1, 2):
        seconds, done = sweep(workers, args, work)
        rate[workers] = done / seconds * 60
        print(f"  {workers} worker(s): {done} runs in {seconds:.1f} s, {rate[workers]:.2f} runs/min")
    print(f"2 workers / 1 worker: {rate[2] / rate[1]:.2f}x")


if __name__ == "__main__":
    main()
