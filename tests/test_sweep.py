"""`bench sweep`: a real local sweep through submitit (every job its own process), its --status, a rerun that
finds everything done, and bad flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.distributed import available_cores
from bench.core.layout import LEASE
from bench.core.lease import acquire, read_lease
from bench.core.store import Store
from bench.runs.resolve import resolve_config
from bench.sweep.jobs import RunJob, make_executor
from bench.sweep.state import SweepOptions

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--methods", "faae,aae,faae+sc", "--dataset", "mnist5k", "--protocol", "smoke", "--metrics", "mse",
        "--executor", "local", "--workers", "2", "--device", "cpu"]  # the CPU on a machine with GPUs too


def _events(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "lease.history.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _state(out: Path) -> dict | None:
    try:
        return json.loads((out / "sweep" / "state.json").read_text())
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_local_sweep_runs_each_job_once_then_status_and_rerun(tmp_path, shared_cache, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # this process holds aae's run, as a job of an interrupted earlier sweep would: the sweep waits for it
    aae_dir = out / "runs" / resolve_config("aae", "mnist5k", "smoke", 0).run_id()
    aae_dir.mkdir(parents=True)
    lease = acquire(aae_dir / LEASE)
    sweep = subprocess.Popen([sys.executable, "-m", "bench", "sweep", *GRID, "--out", str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (st := _state(out)) is None or st["runs"][0]["status"] != "done":  # faae, its first run
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.5)
        aae = next(x for x in _state(out)["runs"] if x["method"] == "aae")
        assert aae["status"] == "queued" and aae["job_id"] is None and aae["message"].startswith("waiting for pid")
    finally:
        lease.release()
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stdout + stderr
    assert "aae-mnist5k-smoke-s0" in stderr and "waiting, another process holds it" in stderr
    assert "running 2" in stderr  # aae and faae+sc: two workers at once, as the live counts show

    state = json.loads((out / "sweep" / "state.json").read_text())
    runs = {x["method"]: x for x in state["runs"]}
    assert set(runs) == {"faae", "aae", "faae+sc"} and state["executor"] == "local"
    assert all(x["status"] == "done" for x in runs.values())
    assert len({x["job_id"] for x in runs.values()}) == 3  # one job per run, none for aae while it was held
    assert runs["faae+sc"]["base"] == runs["faae"]["run_id"]
    assert len(list((out / "sweep" / "jobs").glob("*_result.pkl"))) == 3  # submitit's folder

    store = Store(out / "results.db", readonly=True)
    for x in runs.values():
        row = store.get_run(x["run_id"])
        assert row["status"] == "done", row
        assert store.metrics_done(x["run_id"]) == {"mse"}
        # the job's threads: cores shared out among the two workers
        assert row["device"] == f"cpu:{max(1, available_cores() // 2)} threads"
    for name, claims in (("faae", 1), ("aae", 2)):  # trained once (aae also claimed by this test's lease)
        run_dir = out / "runs" / runs[name]["run_id"]
        assert len(_events(run_dir, "claim")) == claims and len(_events(run_dir, "train")) == 1
        steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert steps == [2, 4, 6]
    # the refinement was claimed after its base had finished training
    base_done = (out / "runs" / runs["faae"]["run_id"] / "last.pt").stat().st_mtime
    assert _events(out / "runs" / runs["faae+sc"]["run_id"], "claim")[0]["started"] >= base_done

    assert main(["sweep", "--status", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    for x in runs.values():
        line = next(line for line in shown.splitlines() if line.startswith(x["run_id"]))
        assert x["job_id"] in line and " done" in line

    # the same sweep again: nothing to submit, nothing retrained
    files = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    shown = capsys.readouterr()
    assert shown.out.count("already done") == 3 and "submitted" not in shown.err
    assert files == {p: p.stat().st_mtime_ns for p in files}
    assert len(list((out / "sweep" / "jobs").glob("*_result.pkl"))) == 3
    assert main(["sweep", "--status", "--out", str(out)]) == 0


@pytest.mark.parametrize("args, expect", [
    (["--executor", "cluster"], "unknown --executor 'cluster'; valid: auto, local, slurm"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--time-min", "-5"], "--time-min must be an integer >= 1"),
])
def test_bad_flags_exit_2(args, expect, tmp_path, capsys):
    assert main(["sweep", "--methods", "faae", "--out", str(tmp_path / "o"), *args]) == 2
    assert expect in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_status_without_sweep_and_methods_missing(tmp_path, capsys):
    assert main(["sweep", "--status", "--out", str(tmp_path)]) == 2
    assert "no sweep at" in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path)]) == 2
    assert "--methods is required" in capsys.readouterr().err


@pytest.mark.soak  # CI's second step: the default suite keeps to its 10-minute budget
def test_preempted_job_is_requeued_and_resumes(tmp_path, shared_cache, monkeypatch):
    """SIGUSR2 is what Slurm sends a job it preempts: the job's checkpoint() resubmits the same call, submitit
    requeues it, and the new process resumes the run from last.pt instead of starting again."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    cfg = resolve_config("faae", "mnist5k", "smoke", 0, {"train": {"max_steps": "80", "epochs": "10",
                                                                  "sample_every": "1000"}})
    run_dir = out / "runs" / cfg.run_id()
    executor = make_executor(out / "sweep", SweepOptions(executor="local"), "cpu")
    job = executor.submit(RunJob(1, []), cfg.to_dict(), str(out), None, "cpu", ["mse"], False)
    deadline = time.monotonic() + 300
    while not (run_dir / "last.pt").exists():  # the first epoch's checkpoint (16 steps of 80)
        assert not job.done() and time.monotonic() < deadline, job.stderr()
        time.sleep(0.1)
    first = read_lease(run_dir / LEASE)
    os.kill(first.pid, signal.SIGUSR2)
    assert job.result()["status"] == "done", job.stderr()
    trains = _events(run_dir, "train")
    assert len(_events(run_dir, "claim")) == 2 and len(trains) == 2
    assert trains[0]["pid"] == first.pid and trains[1]["pid"] != first.pid
    assert trains[1]["from_step"] >= 16  # resumed, not restarted
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 81, 2))  # every logged step once, in order
    assert Store(out / "results.db", readonly=True).get_run(cfg.run_id())["steps"] == 80
