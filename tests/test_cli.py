"""The CLI end to end on the embedded dataset, and its answers to bad input (exit 2, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_run_smoke_end_to_end(tmp_path, tmp_cache):
    out = tmp_path / "out"
    r = cli("run", "--methods", "faae,aae", "--dataset", "mnist5k", "--protocol", "smoke", "--seeds", "0,1",
            "--out", str(out), "--no-progress", "--no-report")
    assert r.returncode == 0, r.stderr
    assert "recon_mse" in r.stdout and "reencode_ratio" in r.stdout
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert table and "re-enc" in table[0] and max(map(len, table)) <= 100  # the compact closing summary
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4 and all((out / "runs" / d / "last.pt").exists() for d in runs)
    assert all(list((out / "runs" / d / "samples").glob("*.png")) for d in runs)
    # the same command again retrains nothing and stores nothing twice
    mtimes = {d: (out / "runs" / d / "last.pt").stat().st_mtime_ns for d in runs}
    again = cli("run", "--methods", "faae,aae", "--dataset", "mnist5k", "--protocol", "smoke", "--seeds", "0,1",
                "--out", str(out), "--no-progress", "--no-report", "--wide")
    assert again.returncode == 0, again.stderr
    assert "recon_mse_random_pair" in again.stdout  # --wide: every stored key
    assert mtimes == {d: (out / "runs" / d / "last.pt").stat().st_mtime_ns for d in runs}
    import sqlite3

    with sqlite3.connect(out / "results.db") as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4
        n, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id || key) FROM metrics").fetchone()
    assert n == distinct > 0


def test_list(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "faae" in out and "aae" in out
    assert main(["list", "metrics", "re*"]) == 0
    assert "reencode" in capsys.readouterr().out


@pytest.mark.parametrize("args,expect", [
    (["run", "--methods", "nope"], "'nope'; valid: faae, aae, bigan"),
    (["run", "--methods", "faae", "--dataset", "mnist"], "unknown dataset 'mnist'; valid: mnist5k"),
    (["run", "--methods", "faae", "--protocol", "fast"], "unknown protocol 'fast'; valid: paper, quick, smoke"),
    (["run", "--methods", "faae", "--set", "train.epoch=3"], "valid: train.epochs"),
    (["run", "--methods", "faae", "--set", "train.epochs=x"], "train.epochs expects int"),
    (["run", "--methods", "faae", "--set", "train.epochs=2", "optim.state=per-layer"],
     "optim.state must be 'network' or 'phase'"),
    (["run", "--methods", "faae,faae+sc", "--set", "method.steps=3"], "--methods 'NAME[method.steps=...]'"),
    (["run", "--methods", "faae", "--seeds", "a"], "--seeds must be comma-separated integers"),
    (["run", "--methods", "faae", "--metrics", "fidd"], "unknown metric 'fidd'; valid: mse"),
    (["run", "--methods", "faae", "--dataset", "cifar10", "--data-root", "/nonexistent/x"], "Expected layout"),
    (["list", "gizmos"], "valid: all, methods, datasets, protocols, metrics"),
])
def test_bad_input_exit_2(args, expect, tmp_path, tmp_cache, capsys):
    assert main([*args, "--out", str(tmp_path)] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_empty_data_root_explains_layout(tmp_path, tmp_cache):
    r = cli("run", "--methods", "faae", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out",
            str(tmp_path / "o"), "--protocol", "smoke")
    assert r.returncode == 2
    assert "train/<class>" in r.stderr and "Traceback" not in r.stderr
