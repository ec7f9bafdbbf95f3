"""Hostile and unusual input (issue 14): stored names that try to leave their directory, read-only and damaged
stores, high-bit-depth images, tiny held-out splits, strict JSON, bad command-line arguments.

Stores are written through the real Store with hand-made rows (no training), so each case costs little."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core.paths import UnsafePathError, path_under, safe_name
from bench.core.store import Store
from metrics.base import MetricValue

ROOT = Path(__file__).resolve().parent.parent
PROV = {"dataset": "mnist5k", "split": "test", "n_images": 4, "dtype": "fp32", "device": "cpu"}


def add_run(store: Store, variant: str, seed: int, recon_mse: float, *, dataset: str = "mnist5k",
            protocol: str = "smoke", run_dir: str = "/nowhere", message: str = "") -> str:
    run_id = f"{variant}-s{seed}-{abs(hash((variant, dataset, protocol))) % 10**6}"
    store.upsert_run(run_id, method="faae", variant=variant, dataset=dataset, protocol=protocol, seed=seed,
                     config_json={"variant": variant, "seed": seed}, config_hash="0123456789ab",
                     code_version="git:aaaaaaaaaaaa", packages_json={}, device="cpu", dtype="fp32",
                     run_dir=run_dir, status="done", message=message)
    store.put_metrics(run_id, "mse", [MetricValue("recon_mse", recon_mse, {**PROV, "dataset": dataset}),
                                      MetricValue("recon_mse_random_pair", 2 * recon_mse, {**PROV, "dataset": dataset})])
    return run_id


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


# --- row 5: nothing is written outside its place ------------------------------------------------------------
def test_safe_name_keeps_good_names_and_confines_the_rest():
    for good in ("faae-mnist5k-smoke-s0-0123456789ab", "faae[loss.rec_weight=30,name=x]-cifar10-quick-s1-abc",
                 "mnist5k-smoke.md"):
        assert safe_name(good) == good
    for bad in ("smoke/../../../../PWN", "..", ".", "", ".hidden", "a\\b", "x" * 300, "<script>", "a\x00b"):
        name = safe_name(bad)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 200
    # two names that clean up alike keep apart
    assert safe_name("a/b") != safe_name("a?b")
    assert path_under("/srv/report", "smoke/../../x.md").parent == Path("/srv/report")
    with pytest.raises(UnsafePathError):
        path_under("/srv/report")


def test_report_of_a_store_with_a_hostile_protocol_stays_in_report_dir(tmp_path, capsys):
    """Row 5: a stored protocol 'smoke/../../../../PWN' (and a dataset holding HTML) wrote PWN.md/.csv/.tex
    outside report/; every file now lands under report/, and report.md shows the names as text, not HTML."""
    work = tmp_path / "a" / "b" / "c" / "d"
    store = Store(work / "results.db")
    evil_ds = '<img src=x onerror="alert(1)">'
    for seed in (0, 1):
        add_run(store, "faae", seed, 0.01 + seed / 100, protocol="smoke/../../../../PWN")
        add_run(store, "faae", seed, 0.02, dataset=evil_ds, message="<b>bold</b> & more")
    before = files_under(tmp_path)
    code, out, err = run_cli(capsys, "report", "--store", str(work / "results.db"), "--no-figures")
    assert code == 0, err
    # a reader in a writable directory may leave SQLite's -wal and -shm beside the store (the next writer
    # removes them); nothing else may appear outside report/
    new = {p for p in files_under(tmp_path) - before if not p.name.startswith("results.db-")}
    report = work / "report"
    assert new and all(report in p.parents for p in new), sorted(map(str, new))
    assert not list(tmp_path.rglob("PWN*"))
    tables = sorted(p.name for p in (report / "tables").iterdir())
    # each table's views (main and detail tables) as .md, .csv and .tex, and its timings as .csv, every name made safe
    prefixes = ("mnist5k-smoke_.._.._.._.._PWN-", "_img_src=x_onerror=_alert_1_-smoke-")
    timings = [n for n in tables if n.endswith("-time.csv")]
    views = [n for n in tables if n not in timings]
    assert len(timings) == 2 and len(views) >= 12 and len(views) % 3 == 0
    assert all(n.startswith(prefixes) for n in tables)
    md = (report / "report.md").read_text()
    assert "<img" not in md and "<b>" not in md and "&lt;img src=x onerror=" in md and "&lt;b&gt;bold" in md
    assert "<img src=x" not in (report / "report.html").read_text()


# --- row 6: read-only stores ----------------------------------------------------------------------------------
def _without_file_override() -> None:
    """In the child: drop root's power to ignore file permissions, so read-only bits hold for it too."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; PR_CAPBSET_DROP = 24, effective after exec
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_store_serves_report_history_compare_and_baseline(tmp_path):
    """Row 6: with the store directory and results.db read-only, these commands failed with "unable to open
    database file"; they now read it read-only, write only where told, and create nothing next to the store."""
    store_dir, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store = Store(store_dir / "results.db")
    for seed in (0, 1):
        add_run(store, "faae", seed, 0.01 + seed / 1000)
        add_run(store, "faae-b", seed, 0.01 + seed / 1000)
    elsewhere.mkdir()
    before = sorted(os.listdir(store_dir))
    assert before == ["results.db"]  # the writer's -wal and -shm are gone once it closed
    db = str(store_dir / "results.db")
    script = textwrap.dedent(f"""
        import os, sys
        from bench.cli import main
        try:
            open(os.path.join({str(store_dir)!r}, "probe"), "w")
            sys.exit("the store directory is writable: this test would prove nothing")
        except PermissionError:
            pass
        e = {str(elsewhere)!r}
        codes = [main(["report", "--store", {db!r}, "--report-dir", e + "/report", "--no-figures"]),
                 main(["history", "--metric", "recon_mse", "--method", "faae", "--store", {db!r}, "--no-plot"]),
                 main(["compare", "--baseline", "faae", "--candidate", "faae-b", "--store", {db!r}]),
                 main(["baseline", "save", "ro", "faae", "--store", {db!r}, "--file", e + "/ro.json"]),
                 main(["report", "--store", {db!r}, "--no-figures"])]
        print("CODES", codes)
    """)
    os.chmod(store_dir / "results.db", 0o444)
    os.chmod(store_dir, 0o555)
    try:
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(elsewhere / "mpl")},
                           preexec_fn=_without_file_override)
    finally:
        os.chmod(store_dir, 0o755)
        os.chmod(store_dir / "results.db", 0o644)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CODES [0, 0, 0, 0, 2]" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    # the last report had nowhere to go: it says so and how to fix it
    assert f"cannot write the report to {store_dir / 'report'}" in r.stderr and "--report-dir" in r.stderr
    assert sorted(os.listdir(store_dir)) == before
    assert (elsewhere / "report" / "report.md").exists()
    assert json.loads((elsewhere / "ro.json").read_text())["name"] == "ro"
    assert "recon_mse (lower is better) of faae" in r.stdout


# --- row 8: damaged stores --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truncated_store(tmp_path_factory) -> bytes:
    """The first half of a real store's file, built once."""
    path = tmp_path_factory.mktemp("truncated") / "results.db"
    store = Store(path)
    for seed in range(60):  # enough rows that half the file cuts through the tables
        add_run(store, f"v{seed}", seed, 0.01)
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty-dir-entry"])
@pytest.mark.parametrize("argv", [
    ["report", "--no-figures"],
    ["history", "--metric", "recon_mse", "--method", "faae", "--no-plot"],
    ["compare", "--baseline", "faae", "--candidate", "faae-b"],
    ["baseline", "save", "x", "--file", "{tmp}/x.json"],
    ["run", "--methods", "faae", "--protocol", "smoke", "--no-progress"],
])
def test_damaged_store_gives_one_line_naming_the_file(tmp_path, capsys, truncated_store, damage, argv):
    """Row 8: a garbage or truncated results.db gave a raw sqlite3.DatabaseError traceback."""
    out = tmp_path / "out"
    out.mkdir()
    db = out / "results.db"
    if damage == "garbage":
        db.write_bytes(b"not a database, just some bytes\n" * 200)
    elif damage == "truncated":
        db.write_bytes(truncated_store)
    else:  # an SQLite file without our tables
        import sqlite3

        sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.close()
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    store_flag = ["--out", str(out)]
    code, _, err = run_cli(capsys, *args, *store_flag)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(db) in lines[0], err
    assert "Traceback" not in err


# --- row 7: high-bit-depth images -------------------------------------------------------------------------------
#: 16-bit values and their 8-bit equivalents, round(v * 255 / 65535)
WIDE = [0, 257, 1000, 32768, 65535]
NARROW = [0, 1, 4, 128, 255]


def _wide_image(path: Path) -> None:
    import numpy as np
    from PIL import Image

    a = np.array([WIDE] * 5, dtype=np.uint16)  # 5 x 5, one value per column
    Image.fromarray(a).save(path)  # PNG and TIFF: 16-bit grey ("I;16")


def test_sixteen_bit_images_are_scaled_not_wrapped(tmp_path, tmp_cache, capsys):
    """Row 7: a 16-bit PNG in a `folder` dataset wrapped (1000 -> 232, 32768 -> 0); PNG (torchvision's decoder)
    and TIFF (which torchvision cannot read, so PIL) now scale to 8 bit, in the dataset and in `bench score`."""
    import numpy as np
    from PIL import Image

    from bench.core.config import DataConfig
    from bench.core.data import decode_files, load_dataset

    root = tmp_path / "images"
    root.mkdir()
    _wide_image(root / "wide.png")
    _wide_image(root / "wide.tif")
    Image.fromarray(np.array([NARROW] * 5, dtype=np.uint8)).save(root / "narrow.png")
    for name in ("wide.png", "wide.tif", "narrow.png"):
        for channels in (1, 3):
            x = decode_files([root / name], 5, channels=channels)
            assert x.dtype == torch.uint8 and x.shape == (1, channels, 5, 5)
            assert x[0, :, 2].tolist() == [NARROW] * channels, (name, channels)
    # a folder dataset of flat 16-bit images, one per value, holds their 8-bit values
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, v in enumerate(WIDE):
        Image.fromarray(np.full((32, 32), v, dtype=np.uint16)).save(flat / f"{i}.{'png' if i % 2 else 'tif'}")
    data = load_dataset("folder", flat, DataConfig(resolution=32))
    pixels = torch.cat([data.train, data.test])
    assert pixels.shape == (5, 3, 32, 32)
    assert sorted(int(p.min()) for p in pixels) == sorted(int(p.max()) for p in pixels) == NARROW
    # `bench score` reads with PIL: the 16-bit image equals its 8-bit version
    code, out, err = run_cli(capsys, "score", "--metric", "mse", str(root / "wide.png"), str(root / "narrow.png"))
    assert code == 0 and "mse = 0 " in out, out + err


# --- row 10: strict JSON ------------------------------------------------------------------------------------------
def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_score_json_is_strict_for_identical_images(tmp_path, capsys):
    """Row 10: `bench score --metric psnr` on identical images printed Infinity with --json."""
    import numpy as np
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    code, out, err = run_cli(capsys, "score", "--metric", "psnr", str(tmp_path / "a.png"), str(tmp_path / "a.png"),
                             "--json")
    assert code == 0, err
    assert "Infinity" not in out and "NaN" not in out
    doc = _strict(out)
    assert doc["value"] is None and doc["per_image"] == {str(tmp_path / "a.png"): None} and doc["n"] == 1
    # the human output still says what it is
    code, out, _ = run_cli(capsys, "score", "--metric", "psnr", str(tmp_path / "a.png"), str(tmp_path / "a.png"))
    assert code == 0 and "psnr = inf" in out


def test_strict_json_dump():
    from bench.core import strict_json

    doc = {"a": float("inf"), "b": [float("-inf"), float("nan"), 1.5], "c": (2, {"d": float("nan")}), "e": Path("x")}
    assert _strict(strict_json.dumps(doc)) == {"a": None, "b": [None, None, 1.5], "c": [2, {"d": None}], "e": "x"}


# --- row 3: bad `bench eval` and `bench score` arguments -----------------------------------------------------------
@pytest.mark.parametrize("argv,expect", [
    (["score", "--metric", "nope", "a", "b"], "unknown metric 'nope'; valid: fid, kid, lpips, mse, psnr, ssim"),
    (["score", "--metric", "mse", "--device", "gpu", "a", "b"], "unknown --device 'gpu'; valid: auto, cpu, cuda"),
    (["score", "--metric", "lpips", "--net", "squeeze", "a", "b"], "unknown --net 'squeeze'; valid: alex, vgg"),
    (["score", "--metric", "fid", "--dtype", "fp8", "a", "b"], "valid: "),
    (["score", "--metric", "mse", "{tmp}/missing.png", "{tmp}/missing.png"], "no such file or folder"),
    (["eval", "--out", "{tmp}", "--device", "tpu"], "no runs under"),
    (["eval", "--out", "{tmp}/with-runs", "--device", "tpu"], "unknown --device 'tpu'; valid: auto, cpu, cuda"),
    (["eval", "--out", "{tmp}/with-runs", "--metrics", "mse,nope"], "unknown metric 'nope'; valid: mse,"),
    (["eval", "--out", "{tmp}/with-runs", "--methods", "aae"],
     "there are 1 run(s) of methods faae on datasets mnist5k"),
    (["eval", "--out", "{tmp}/broken-config"], "is not a readable run config"),
])
def test_bad_eval_and_score_arguments_exit_2_naming_the_valid_choices(tmp_path, capsys, argv, expect):
    from bench.runs.resolve import resolve_config

    run_dir = tmp_path / "with-runs" / "runs" / "faae-x"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(resolve_config("faae", "mnist5k", "smoke").to_dict()))
    broken = tmp_path / "broken-config" / "runs" / "r"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{ not json")
    code, _, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and expect in err and "Traceback" not in err, err


# --- row 11: a held-out split too small for a metric ------------------------------------------------------------
def test_one_image_test_split_gives_na_with_the_reason(tmp_path, tmp_cache, capsys):
    """Row 11: with 3 images (2 train, 1 test) recon_mse_random_pair silently equalled recon_mse (the one image
    paired with itself); now it, and FID/KID, are n/a with the reason."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "three"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "run", "--methods", "faae", "--dataset", "folder", "--data-root", str(root),
                                 "--protocol", "smoke", "--set", "train.max_steps=2", "data.resolution=32",
                                 "--metrics", "mse,fid", "--out", str(out), "--no-progress", "--no-report")
    assert code == 0, printed + err
    got = {r["key"]: r for r in Store(out / "results.db").metric_rows()}
    assert got["recon_mse"]["value"] is not None and got["recon_mse"]["provenance"]["n_images"] == 1
    for key in ("recon_mse_random_pair", "fid_samples", "kid_samples"):
        assert got[key]["value"] is None, key
        assert "at least 2 held-out images, got 1" in got[key]["provenance"]["reason"], key
    assert "recon_mse_random_pair=n/a" in printed


# --- issue 26: a dataset file name that is not UTF-8 ------------------------------------------------------------
def test_dataset_file_name_not_utf8_trains_and_evaluates(tmp_path, tmp_cache, capsys):
    """A `folder` dataset holding b"\\xff.png" stopped `bench run` with UnicodeEncodeError in listing_digest; the
    names are only read (hashed as bytes), so the run trains, is scored and collected."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in (b"\xff.png", b"caf\xe9.png", b"plain.png", b"\xc3\xa9t\xc3\xa9.png"):  # the last is UTF-8
        path = root / os.fsdecode(name)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, format="PNG")
    out = tmp_path / "out"
    code, printed, err = run_cli(capsys, "run", "--methods", "faae", "--dataset", "folder", "--data-root", str(root),
                                 "--protocol", "smoke", "--set", "train.max_steps=2", "data.resolution=32",
                                 "--metrics", "mse", "--out", str(out), "--no-progress", "--no-report")
    assert code == 0 and "Traceback" not in err, printed + err
    (run,) = Store(out / "results.db").runs()
    assert run["status"] == "done" and run["dataset"] == "folder"
    assert {r["key"] for r in Store(out / "results.db").metric_rows()} >= {"recon_mse"}
    assert run_cli(capsys, "collect", "--out", str(out))[0] == 0
