"""Data-parallel training throughput: one process against two (DistributedDataParallel over gloo on the CPU).

    python benchmarks/ddp_speed.py                       # F-AAE, quick protocol on mnist5k, 60 steps of batch 64
    python benchmarks/ddp_speed.py --protocol smoke --steps 30 --method aae

Each configuration is a real `torchrun --nproc-per-node=N -m bench run` of the same run (same global batch, so
the same steps and learning rates) in its own output directory, every process with OMP_NUM_THREADS=1: N=2 uses
two cores where N=1 uses one. Reported: the run's training images/s as the runner measured it (every step,
batch transfer to optimiser step, rank 0's clock) and the rate after the first log interval (oneDNN picks its
kernels in the first steps), from the run's log; then the ratio of two processes to one. Needs as many idle
cores as processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_name  # noqa: E402


def train(processes: int, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """One run trained by `processes` processes: its stored images/s and the rate after the first log line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    sets = [f"train.max_steps={args.steps}", f"train.log_every={args.log_every}", "train.sample_every=100000",
            *args.set]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", "--standalone",
           "-m", "bench", "run", "--methods", args.method, "--dataset", args.dataset, "--protocol", args.protocol,
           "--metrics", "throughput", "--out", str(out), "--no-progress", "--no-report", "--device", "cpu",
           "--set", *sets]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{done.stderr[-4000:]}")
    with sqlite3.connect(out / "results.db") as con:
        stored = con.execute("SELECT value FROM metrics WHERE key = 'train_images_per_s'").fetchone()[0]
        config = json.loads(con.execute("SELECT config_json FROM runs").fetchone()[0])
    [log] = (out / "runs").glob("*/log.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    batch = config["train"]["batch_size"]
    # the log's images/s is cumulative: the training seconds up to each line follow from it
    seconds = [rec["step"] * batch / rec["images_per_s"] for rec in lines]
    steady = (lines[-1]["step"] - lines[0]["step"]) * batch / (seconds[-1] - seconds[0])
    return {"stored": stored, "steady": steady, "batch": batch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="faae")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--protocol", default="quick")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddp-speed-") as tmp:
        rates = {n: train(n, Path(tmp) / f"n{n}", args) for n in (1, 2)}
    batch = rates[1]["batch"]
    print(f"{args.method}, {args.protocol} on {args.dataset}, {args.steps} steps of global batch {batch} "
          f"({batch // 2} per process at 2), gloo, OMP_NUM_THREADS=1 per process")
    print(f"CPU: {cpu_name()}")
    print(f"{'processes':>9}  {'images/s (every step)':>22}  {f'images/s (after step {args.log_every})':>26}")
    for n, r in rates.items():
        print(f"{n:>9}  {r['stored']:>22.1f}  {r['steady']:>26.1f}")
    print(f"ratio 2 vs 1 process: {rates[2]['stored'] / rates[1]['stored']:.2f}x (every step), "
          f"{rates[2]['steady'] / rates[1]['steady']:.2f}x (after step {args.log_every})")


if __name__ == "__main__":
    main()
