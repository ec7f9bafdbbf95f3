"""Shared fixtures: an isolated cache, tiny image folders, and the real archives of ../shared/data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Tests compare CPU-trained weights with torch.equal and choose --device auto: on a GPU host they see no GPU, so
# that `auto` is the CPU everywhere. The `cuda` tests run where AEGAN_BENCH_TEST_CUDA=1 (benchmarks/gpu_check.py).
# Set before torch initialises CUDA; subprocesses inherit it.
if os.environ.get("AEGAN_BENCH_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _threads():
    from bench.core.distributed import available_cores

    torch.set_num_threads(available_cores())


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty dataset cache for the test; pretrained weights keep their persistent cache, so that
    they are fetched once per machine, not once per test."""
    from metrics.weights import WEIGHTS_ENV, weights_dir

    monkeypatch.setenv(WEIGHTS_ENV, str(weights_dir()))
    d = tmp_path / "cache"
    monkeypatch.setenv("AEGAN_BENCH_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One dataset decode for every trained test of the session (each tmp_cache would decode mnist5k again)."""
    d = tmp_path_factory.getbasetemp() / "shared-dataset-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEGAN_BENCH_CACHE", str(d))
        yield d


def shared_archives() -> Path | None:
    env = os.environ.get("AEGAN_BENCH_SHARED_DATA")
    p = Path(env) if env else ROOT.parent / "shared" / "data"
    return p if (p / "unpack.sh").exists() else None


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """The real CIFAR-10 / CelebA / Tiny ImageNet archives, unpacked once per machine (skip when absent)."""
    src = shared_archives()
    if src is None:
        pytest.skip("../shared/data is not present")
    dest = Path(os.environ.get("AEGAN_BENCH_UNPACKED", ROOT.parent / "shared-data-cache"))
    try:
        out = subprocess.run(["bash", str(src / "unpack.sh"), str(dest)], capture_output=True, text=True,
                             check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot unpack ../shared/data: {e}")
    return Path(out.stdout.strip().splitlines()[-1])
