"""The wheel installs: built from this checkout, installed into a fresh virtual environment outside it, it lists
the registries and finishes a smoke run, importing the suite from the environment and not from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.install
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    # built from a copy: a build/ folder of an earlier build in the checkout would leak into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "bench-out",
                                                             "test-artifacts", ".pytest_cache", ".ruff_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, timeout=300)
    (wheel,) = wheels.glob("aegan_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("bench/core/store.py", "bench/runs/execute.py", "bench/sweep/jobs.py", "bench/compare/verdicts.py",
                   "bench/commands/run.py", "methods/plugins.py", "metrics/fidelity.py", "reports/render.py"):
        assert module in names, f"{module} missing from the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    # the dependencies (torch and the rest) come from this interpreter's site-packages; the suite from the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "AEGAN_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}

    def run(*args: str) -> str:
        r = subprocess.run([py, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    where = run("-c", "import bench.runs.execute as m; print(m.__file__)")
    assert Path(where.strip()).is_relative_to(venv), f"imported from {where.strip()}, not the venv"
    assert "faae" in run("-m", "bench", "list")
    run("-m", "bench", "run", "--methods", "faae", "--protocol", "smoke", "--out", str(work / "out"), "--no-progress",
        "--no-report")
    assert (work / "out" / "results.db").is_file()
