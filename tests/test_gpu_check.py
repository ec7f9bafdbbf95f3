"""benchmarks/gpu_check.py starts wherever it is copied: its CPU fallback runs every stage (sized down) and writes its
JSON and markdown reports. On a GPU host the same script is the one-shot check (docs/speed.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.soak
def test_the_gpu_check_runs_its_cpu_fallback(tmp_path, tmp_cache):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), "--cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r.returncode == 0, r.stdout + r.stderr
    assert report["fallback"] is True and report["device"] == "cpu"
    status = {s["stage"]: s["status"] for s in report["stages"]}
    assert status.pop("cuda tests") == "skipped" and set(status.values()) == {"passed"}, status
    stages = {s["stage"]: s for s in report["stages"]}
    fid = stages["exact FID/KID against torch-fidelity"]["weights"]["random"]
    assert fid["fid_rel_diff"] <= 1e-3 and fid["fid"] > 0
    assert stages["host synchronisations per training step"]["syncs_per_step"] == dict.fromkeys(
        ("faae", "aae", "bigan", "ali", "latent-recovery"), 0)
    speed = stages["training images/s per method"]["images_per_s"]
    assert set(speed) == {"faae", "aae", "bigan", "ali", "latent-recovery"} and all(
        v > 0 for row in speed.values() for v in row.values())
    assert "| exact FID/KID against torch-fidelity | passed |" in (tmp_path / "gpu_check.md").read_text()
