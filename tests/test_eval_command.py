"""`bench eval`: scores finished runs from their checkpoints, skips what is stored, never retrains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core.checkpoint import load_checkpoint
from bench.core.layout import CHECKPOINT
from bench.core.store import Store

ROOT = Path(__file__).resolve().parent.parent
# every test here needs a trained run (the module fixture trains one through the CLI: ~10 s)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished smoke run of F-AAE, trained by the real CLI and scored with `mse` only."""
    out = tmp_path_factory.mktemp("eval") / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(out.parent / "cache")}
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "faae", "--protocol", "smoke",
                        "--out", str(out), "--metrics", "mse", "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def snapshot(out: Path) -> dict:
    """What training leaves behind; evaluation must not change any of it."""
    (run_dir,) = (out / "runs").iterdir()
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    return {"ckpt_mtime": (run_dir / CHECKPOINT).stat().st_mtime_ns, "step": ckpt["step"],
            "log": (run_dir / "log.jsonl").read_text(), "samples": sorted(p.name for p in (run_dir / "samples").iterdir())}


def rows(out: Path) -> dict:
    return {r["key"]: r for r in Store(out / "results.db").metric_rows()}


def test_eval_adds_metrics_without_retraining(trained, capsys, monkeypatch):
    monkeypatch.setenv("AEGAN_BENCH_CACHE", str(trained.parent / "cache"))
    before, stored = snapshot(trained), rows(trained)
    assert set(stored) == {"recon_mse", "recon_mse_random_pair"}

    code = main(["eval", "--out", str(trained), "--device", "cpu", "--metrics", "mse,image_quality,sharpness,throughput"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert snapshot(trained) == before
    after = rows(trained)
    assert {"recon_psnr", "recon_ssim", "recon_sharpness_ratio", "train_images_per_s"} <= set(after)
    assert after["recon_mse"]["created"] == stored["recon_mse"]["created"]  # stored metric skipped
    assert "recon_mse=" not in printed and "recon_psnr=" in printed
    header = [line for line in printed.splitlines() if line.startswith("| method")]  # the summary table
    # the compact summary: main numbers only, within 100 columns
    assert header and "MSE" in header[0] and "sharp" in header[0] and "recon_psnr" not in header[0]
    assert "| faae" in printed and max(len(line) for line in printed.splitlines() if line.startswith("|")) <= 100
    # the training throughput comes from the checkpoint's own timing
    ckpt = load_checkpoint(next((trained / "runs").iterdir()) / CHECKPOINT)
    assert after["train_images_per_s"]["value"] == pytest.approx(ckpt["images_seen"] / ckpt["train_seconds"])

    # again: nothing left to compute; --overwrite recomputes the selection, with the same deterministic values
    assert main(["eval", "--out", str(trained), "--metrics", "image_quality"]) == 0
    assert "recon_psnr=" not in capsys.readouterr().out
    assert main(["eval", "--out", str(trained), "--metrics", "image_quality", "--overwrite"]) == 0
    again = rows(trained)
    assert again["recon_psnr"]["created"] > after["recon_psnr"]["created"]
    assert again["recon_psnr"]["value"] == after["recon_psnr"]["value"]
    assert snapshot(trained) == before


def test_eval_filters_and_user_errors(trained, tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path / "none")]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert main(["eval", "--out", str(trained), "--methods", "aae"]) == 2
    assert "no run under" in capsys.readouterr().err
    assert main(["eval", "--out", str(trained), "--runs", "faae-*", "--metrics", "nope"]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_eval_skips_unfinished_runs(trained, tmp_path, capsys):
    """A run whose checkpoint is not finished is left for `bench run` to resume, not evaluated."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (run_dir,) = (out / "runs").iterdir()
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    ckpt["finished"] = False
    torch.save(ckpt, run_dir / CHECKPOINT)
    assert main(["eval", "--out", str(out), "--metrics", "reencode"]) == 1
    assert "no finished checkpoint" in capsys.readouterr().out
    assert "reencode_error" not in rows(out)


def test_stored_fid_equals_torch_fidelity_on_the_saved_images(trained, tmp_path, monkeypatch):
    """`bench eval` keeps the exact images FID scored (run_dir/eval/samples/*.png); torch-fidelity's own
    calculate_metrics on that folder and the test split gives the stored values (default: exact mode)."""
    import json

    import torch_fidelity

    from bench.core.data import load_dataset
    from metrics.fidelity import UInt8Images
    from metrics.weights import inception_weights

    monkeypatch.setenv("AEGAN_BENCH_CACHE", str(trained.parent / "cache"))
    out = tmp_path / "out"  # a copy: the other tests of this module expect the trained store as it was
    shutil.copytree(trained, out)
    assert main(["eval", "--out", str(out), "--device", "cpu", "--metrics", "fid"]) == 0
    (run_dir,) = (out / "runs").iterdir()
    saved = sorted((run_dir / "eval" / "samples").glob("*.png"))
    stored = rows(out)
    n = stored["fid_samples"]["provenance"]["n_generated"]
    assert len(saved) == n == 64
    recorded = json.loads((run_dir / "data.json").read_text())
    test = load_dataset("mnist5k").test
    assert stored["fid_samples"]["provenance"]["test_split_sha256"] == recorded["test_sha256"][:16]
    direct = torch_fidelity.calculate_metrics(
        input1=str(run_dir / "eval" / "samples"), input2=UInt8Images(test[:n]), fid=True, kid=True,
        kid_subset_size=n, feature_extractor_weights_path=str(inception_weights().path), cuda=False,
        save_cpu_ram=True, cache=False, verbose=False)
    assert stored["fid_samples"]["value"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-3)
    assert stored["kid_samples"]["value"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-2)


def test_eval_refuses_a_different_copy_of_the_data(trained, tmp_path, capsys):
    """A run is never scored on other images than it was trained with: the digests recorded at training time
    (data.json) are checked, and both are named."""
    import json

    copy = tmp_path / "out"
    shutil.copytree(trained, copy)
    (run_dir,) = (copy / "runs").iterdir()
    recorded = json.loads((run_dir / "data.json").read_text())
    (run_dir / "data.json").write_text(json.dumps({**recorded, "test_sha256": "0" * 64}))
    assert main(["eval", "--out", str(copy), "--device", "cpu", "--metrics", "mse", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "0000000000000000" in err and recorded["test_sha256"][:16] in err and "test split" in err


def test_eval_without_metrics_scores_the_protocol_default_set(trained, tmp_path, capsys, monkeypatch):
    """Issue 14 row 3: `bench eval --out DIR` without --metrics died with "TypeError: 'NoneType' object is not
    iterable"; it evaluates the protocol's default set (smoke: no pretrained networks), skipping stored ones."""
    from metrics import METRICS, select_metrics

    monkeypatch.setenv("AEGAN_BENCH_CACHE", str(trained.parent / "cache"))
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    code = main(["eval", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, printed + err
    expected = {k for n in select_metrics(None, pretrained=False) for k in METRICS.get(n).keys}
    assert set(rows(out)) == expected and "lpips" not in expected and "fid_samples" not in expected
    assert "recon_mse=" not in printed  # stored before, so skipped
