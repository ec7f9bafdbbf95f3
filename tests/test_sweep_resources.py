"""What one job of a sweep may use: the cores of the process's CPU affinity, and on a machine with GPUs its own,
disjoint GPUs (CUDA_VISIBLE_DEVICES exported before its Python starts). No GPU is needed: the GPUs are names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.core.distributed import available_cores
from bench.core.errors import UsageError
from bench.runs.execute import use_all_cores
from bench.runs.resolve import resolve_config
from bench.sweep.jobs import RunJob, Sweep, job_setup, job_threads, local_gpus, make_executor
from bench.sweep.state import SweepOptions, job_gpus, visible_gpus

ROOT = Path(__file__).resolve().parent.parent


# --- cores -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_pinned_to_one_core_uses_one():
    code = ("import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "os.environ.pop('OMP_NUM_THREADS', None); torch.set_num_threads(4); "
            "from bench.core.distributed import available_cores; from bench.runs.execute import use_all_cores; "
            "use_all_cores(); print(available_cores(), torch.get_num_threads())")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_thread_counts_follow_the_affinity_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3, 4, 5, 6, 7}, raising=False)
    assert available_cores() == 6
    assert job_threads("local", SweepOptions(workers=2)) == 3
    assert job_threads("local", SweepOptions(workers=8)) == 1
    assert job_threads("slurm", SweepOptions(cpus_per_run=5)) == 5  # Slurm's CPUs, whatever this host has
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        use_all_cores()
        assert torch.get_num_threads() == 6
        from bench.tune.run import _threads

        _threads(4)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: every core
    assert available_cores() == 64


# --- GPUs ------------------------------------------------------------------------------------------------
def test_visible_gpus_honour_cuda_visible_devices():
    assert visible_gpus(None, 3) == ["0", "1", "2"]
    assert visible_gpus("4,6, 7", 3) == ["4", "6", "7"]
    assert visible_gpus("GPU-a1b2,MIG-c3d4", 2) == ["GPU-a1b2", "MIG-c3d4"]  # UUIDs, kept as named
    assert visible_gpus("4,6,7", 2) == ["4", "6"]  # what CUDA found: an entry it could not use ends the list
    assert visible_gpus("", 0) == visible_gpus(None, 0) == []


def test_job_gpus_are_disjoint_sets_taken_round_robin():
    visible = ["4", "5", "6", "7"]
    assert [job_gpus(i, 1, visible) for i in range(4)] == [["4"], ["5"], ["6"], ["7"]]
    assert [job_gpus(i, 2, visible) for i in range(2)] == [["4", "5"], ["6", "7"]]
    assert job_gpus(2, 2, visible) == ["4", "5"]  # a third concurrent job shares the first set
    assert job_gpus(1, 3, visible) == ["4", "5", "6"]  # one set of three; the fourth GPU stays idle
    assert job_gpus(0, 4, visible) == visible
    assert job_gpus(5, 0, visible) == job_gpus(0, 0, []) == []
    with pytest.raises(UsageError, match=r"--gpus-per-run 5, but this process sees 4 GPU\(s\) \(4,5,6,7\); "
                                         r"valid: 0 to 4"):
        job_gpus(0, 5, visible)
    with pytest.raises(UsageError, match=r"sees 0 GPU\(s\); valid: 0 to 0"):
        job_gpus(0, 1, [])


@pytest.fixture
def four_gpus(monkeypatch):
    """This process sees GPUs 4..7 (as a job of a scheduler would), without any GPU; CUDA is not initialised
    under these names (a machine with GPUs keeps its own for the rest of the session)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_local_gpus_per_job(four_gpus):
    assert local_gpus(SweepOptions(), "cpu") == (0, [])  # the CPU: no GPU, whatever --gpus-per-run says
    assert local_gpus(SweepOptions(gpus_per_run=2), "cpu") == (0, [])
    assert local_gpus(SweepOptions(), "auto") == (1, ["4", "5", "6", "7"])  # a job trains on one GPU
    assert local_gpus(SweepOptions(gpus_per_run=2), "cuda") == (2, ["4", "5", "6", "7"])
    assert local_gpus(SweepOptions(gpus_per_run=0), "auto") == (0, ["4", "5", "6", "7"])  # then on the CPU
    with pytest.raises(UsageError, match="valid: 0 to 4"):
        local_gpus(SweepOptions(gpus_per_run=8), "auto")
    with pytest.raises(UsageError, match="--gpus-per-run 0: the jobs would see no GPU; valid: --gpus-per-run 1 to 4"):
        local_gpus(SweepOptions(gpus_per_run=0), "cuda")
    with pytest.raises(UsageError, match="--device cuda:1 names one GPU"):
        local_gpus(SweepOptions(), "cuda:1")


def test_local_gpus_without_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert local_gpus(SweepOptions(), "auto") == (0, [])


def test_job_setup_exports_threads_and_gpus():
    assert job_setup(3, None) == ["export OMP_NUM_THREADS=3"]  # Slurm: the GPUs it allocated
    assert job_setup(3, []) == ["export OMP_NUM_THREADS=3", "export CUDA_VISIBLE_DEVICES=''"]  # none at all
    assert job_setup(1, ["GPU-a1b2", "5"])[1] == "export CUDA_VISIBLE_DEVICES=GPU-a1b2,5"


class FakeExecutor:
    """A local executor that records each job's setup and GPUs instead of starting it."""

    cluster = "local"

    def __init__(self):
        self.setup: list[str] = []
        self.jobs: list[tuple[list[str], list[str] | None]] = []

    def update_parameters(self, **params):
        self.setup = params["local_setup"]

    def submit(self, fn: RunJob, *args):
        self.jobs.append((self.setup, fn.gpus))
        return SimpleNamespace(job_id=str(len(self.jobs)))


def test_concurrent_local_jobs_get_disjoint_gpus_and_reuse_freed_ones(tmp_path):
    cfgs = [resolve_config("faae", "mnist5k", "smoke", seed) for seed in range(5)]
    sweep = Sweep(cfgs, tmp_path, None, "auto", ["mse"], False, [], SweepOptions(workers=3), log=lambda line: None)
    sweep.executor = FakeExecutor()
    sweep.gpus = (1, ["4", "6"])
    ids = list(sweep.runs)
    sweep._submit(ids[:2])
    sweep.runs[ids[1]].status = "done"  # its GPU is free again
    sweep._submit(ids[2:3])  # takes the freed 6
    sweep._submit(ids[3:5])  # 3 workers, 2 GPUs: the least used first
    gpus = [g for _, g in sweep.executor.jobs]
    assert gpus == [["4"], ["6"], ["6"], ["4"], ["6"]]
    assert [setup[-1] for setup, _ in sweep.executor.jobs] == [f"export CUDA_VISIBLE_DEVICES={g[0]}" for g in gpus]
    assert all(setup[0] == f"export OMP_NUM_THREADS={job_threads('local', sweep.opts)}"
               for setup, _ in sweep.executor.jobs)
    cpu = Sweep(cfgs, tmp_path, None, "cpu", ["mse"], False, [], SweepOptions(workers=3), log=lambda line: None)
    cpu.executor = FakeExecutor()  # its gpus stay (0, []): every job sees no GPU
    cpu._submit(ids[:3])
    assert {setup[-1] for setup, _ in cpu.executor.jobs} == {"export CUDA_VISIBLE_DEVICES=''"}
    assert [g for _, g in cpu.executor.jobs] == [[], [], []]


@pytest.mark.slow
def test_a_local_job_process_sees_only_its_gpus(tmp_path, four_gpus):
    """Through submitit's real local executor: the job's process starts with its own CUDA_VISIBLE_DEVICES (not
    submitit's 0..n-1), and a CPU sweep's jobs see no GPU."""
    executor = make_executor(tmp_path, SweepOptions(executor="local"), "auto")
    # os.getenv reads the job's own environment (a bound os.environ.get would carry this process's)
    assert executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "4"  # the first slot's
    executor.update_parameters(local_setup=job_setup(1, job_gpus(3, 1, ["4", "5", "6", "7"])))
    assert executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "7"
    cpu = make_executor(tmp_path / "cpu", SweepOptions(executor="local", gpus_per_run=2), "cpu")
    assert cpu.submit(os.getenv, "CUDA_VISIBLE_DEVICES", "unset").result() == ""
