"""Reports: table maths, grid shapes, a report from a real smoke store (with missing metrics), determinism."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.core.data import ImageData
from bench.core.store import Store
from bench.runs.resolve import resolve_config
from methods.trained import build_method
from metrics import MetricValue
from reports import grids as G
from reports.render import write_report
from reports.results import load_results
from reports.tables import MISSING, NA, OK, Cell, aggregate, build_tables, format_cell, mark_best, to_csv

ROOT = Path(__file__).resolve().parent.parent
#: two cheap metrics keep the store quick to build (throughput alone costs ~1 s per run)
SMOKE_METRICS = "mse,reencode"
_BUILT: dict[str, Path] = {}


def build_smoke_store(factory: pytest.TempPathFactory) -> Path:
    """The real smoke protocol, once per session: faae and aae on 2 seeds, and the report `bench run`
    writes at its end. Returns the --out directory (runs/, results.db, report/)."""
    if "out" not in _BUILT:
        out = factory.mktemp("smoke") / "out"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(out.parent / "cache")}
        r = subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "faae,aae", "--protocol", "smoke",
                            "--seeds", "0,1", "--metrics", SMOKE_METRICS, "--out", str(out), "--no-progress"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"report: {out / 'report' / 'report.html'}" in r.stdout
        _BUILT["out"] = out
    return _BUILT["out"]


def rendered_report(factory: pytest.TempPathFactory) -> Path:
    """report.html of the smoke store, as `bench run` wrote it."""
    return build_smoke_store(factory) / "report" / "report.html"


@pytest.fixture(scope="session")
def smoke_out(tmp_path_factory) -> Path:
    return build_smoke_store(tmp_path_factory)


def quiet(*_args) -> None:
    pass


# --- table maths ----------------------------------------------------------------------------------------
def test_aggregate_mean_and_sample_std():
    c = aggregate([1.0, 2.0, 4.5])
    assert c.status == OK and c.n == 3
    assert c.mean == pytest.approx(2.5)
    assert c.std == pytest.approx(statistics.stdev([1.0, 2.0, 4.5])) == pytest.approx(1.802775637731995)
    one = aggregate([0.25])
    assert one.mean == 0.25 and one.std is None and format_cell(one) == "0.2500"
    assert aggregate([None, None]).status == NA and format_cell(aggregate([None])) == "n/a"
    assert aggregate([]).status == MISSING and format_cell(aggregate([])) == "—"
    partial = aggregate([None, 3.0])
    assert partial.status == OK and partial.n == 1 and partial.mean == 3.0
    assert format_cell(aggregate([1.0, 2.0])) == "1.500 ± 0.71"
    assert format_cell(aggregate([1430.0, 1400.0])) == "1415 ± 21"
    assert format_cell(aggregate([2e-5])) == "2.000e-05"


@pytest.mark.parametrize("direction,expect", [("lower", [False, True, False, False, False]),
                                              ("higher", [False, False, True, False, False])])
def test_best_marking_follows_direction(direction, expect):
    cells = [aggregate([0.5, 0.7]), aggregate([0.1]), aggregate([0.9, 0.95]), aggregate([None]), aggregate([])]
    assert [c.best for c in mark_best(cells, direction)] == expect


def test_best_marking_of_a_ratio_is_closeness_to_1():
    """Sharpness ratios: 3.0 is as far from the real images as 1/3, and never beats 1.1, whichever side of 1."""
    from metrics import direction

    d = direction("recon_sharpness_ratio")
    for far in (3.0, 1 / 3, 0.0):
        assert [c.best for c in mark_best([aggregate([far]), aggregate([1.1])], d)] == [False, True]
    assert [c.best for c in mark_best([aggregate([3.0]), aggregate([1 / 3])], d)] == [True, True]  # a tie
    assert direction("sample_sharpness_ratio") == direction("density_samples") == d == "closest to 1"


def test_best_marking_ties_and_single_values():
    tied = mark_best([aggregate([0.2]), aggregate([0.2]), aggregate([0.3])], "lower")
    assert [c.best for c in tied] == [True, True, False]
    # one value in a column is not "best" of anything
    assert not any(c.best for c in mark_best([aggregate([0.2]), aggregate([None])], "lower"))
    assert mark_best([Cell(NA), Cell(MISSING)], "higher") == [Cell(NA), Cell(MISSING)]


# --- grids ----------------------------------------------------------------------------------------------
def test_morph_weights_and_corners():
    w = G.bilinear_weights(5)
    assert w.shape == (25, 4)
    torch.testing.assert_close(w.sum(1), torch.ones(25))
    for cell, corner in ((0, 0), (4, 1), (20, 2), (24, 3)):
        assert w[cell].argmax() == corner and w[cell, corner] == 1
    torch.testing.assert_close(w[12], torch.full((4,), 0.25))
    z = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    from bench.core.priors import get_prior

    codes = G.morph_codes(z, 5, get_prior("sphere").project)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(25))  # normalised onto the sphere
    torch.testing.assert_close(codes[[0, 4, 20, 24]], z)


def test_side_view_picks_the_most_asymmetric_images():
    test = torch.zeros(50, 3, 8, 8, dtype=torch.uint8)
    test[7, :, :, :3] = 255  # left side bright: asymmetric
    test[21, :, :, :1] = 90
    test[30] = 128  # uniform: symmetric
    idx = G.side_view_indices(test, n=2, pool=50)
    assert idx.tolist() == [7, 21]
    assert G.asymmetry_scores(test[[30]]).item() == 0


def test_grids_leave_out_methods_without_the_capability(monkeypatch, tmp_path):
    from methods import METHODS
    from reports.results import Run

    def run(method: str) -> Run:
        return Run(f"{method}-r", method, method, "celeba", "smoke", 0, status="done", run_dir=tmp_path, device="cpu",
                   dtype="bf16", steps=1, train_seconds=1.0)

    monkeypatch.setattr(METHODS.get("aae"), "provides", frozenset({"encode", "decode"}))
    plans = {k.name: (chosen, notes) for k, chosen, notes in
             G.plan_grids([("faae", run("faae")), ("aae", run("aae")), ("mystery", run("mystery"))], "celeba")}
    assert list(plans) == ["recon", "samples", "morph", "side-view"]
    assert [label for label, _ in plans["recon"][0]] == ["faae", "aae"]
    assert [label for label, _ in plans["samples"][0]] == ["faae"]
    assert plans["samples"][1] == ["aae: lacks sample", "mystery: method 'mystery' is not registered here"]
    assert "side-view" not in {k.name for k, _, _ in G.plan_grids([("faae", run("faae"))], "mnist5k")}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [32, 64])
def test_grid_shapes(channels, resolution, tmp_path):
    """Every grid kind on a (freshly initialised) model of the data's shape: block sizes, grid and PNG size."""
    cfg = resolve_config("faae", "mnist5k", "smoke", 0)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, resolution=resolution))
    gen = torch.Generator().manual_seed(0)
    test = torch.randint(0, 256, (40, channels, resolution, resolution), dtype=torch.uint8, generator=gen)
    data = ImageData("t", test, test)
    model = build_method(cfg, data).eval()
    cell = resolution + G.PAD
    for _, kind in G.GRIDS.items():
        x = kind.select(test).float() / 255 if kind.select else None
        with torch.no_grad():
            out = kind.draw(model, x)
        n = {"recon": G.GRID_IMAGES, "side-view": G.GRID_IMAGES, "samples": G.SAMPLES_PER_METHOD,
             "morph": G.MORPH_SIZE ** 2}[kind.name]
        assert out.shape == (n, channels, resolution, resolution), kind.name
        blocks = ([("real", x)] if x is not None else []) + [("a", out), ("b", out)]
        grid, labels = G.compose(blocks, kind.ncol)
        rows = sum(-(-len(b) // kind.ncol) for _, b in blocks)
        assert grid.shape == (3, rows * cell + G.PAD, kind.ncol * cell + G.PAD) and grid.dtype == torch.uint8
        assert [lab for lab, _ in labels] == [lab for lab, _ in blocks]
        assert all(0 < y < grid.shape[1] for _, y in labels)
        path = tmp_path / f"{kind.name}.png"
        scale = G.display_scale(resolution)
        G.render_png(grid, labels, path, scale)
        from PIL import Image

        with Image.open(path) as img:
            assert img.mode == "RGB" and img.height == grid.shape[1] * scale and img.width > grid.shape[2] * scale
    # grey images become 3 identical channels; real images appear unchanged in the grid
    grid, _ = G.compose([("x", test[:8].float() / 255)], 8)
    torch.testing.assert_close(grid[:, G.PAD:G.PAD + resolution, G.PAD:G.PAD + resolution],
                               test[0].expand(3, -1, -1))


# --- reports from a real smoke store --------------------------------------------------------------------
def _store_means(db: Path) -> dict[tuple[str, str], list[float]]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT r.variant, m.key, m.value FROM metrics m JOIN runs r USING (run_id) "
                           "WHERE m.value IS NOT NULL").fetchall()
    out: dict[tuple[str, str], list[float]] = {}
    for variant, key, value in rows:
        out.setdefault((variant, key), []).append(value)
    return out


@pytest.mark.slow
def test_report_from_smoke_store(smoke_out, tmp_path_factory):
    html_path = rendered_report(tmp_path_factory)
    rep = html_path.parent
    assert html_path.name == "report.html"
    tables = {p.name for p in (rep / "tables").iterdir()} - {"mnist5k-smoke-time.csv"}
    views = {name.rsplit(".", 1)[0].removeprefix("mnist5k-smoke-") for name in tables}
    from reports.tables import FAMILIES

    assert {"main", "reconstruction", "latent"} <= views <= {"main", *FAMILIES}
    assert tables == {f"mnist5k-smoke-{v}.{ext}" for v in views for ext in ("md", "csv", "tex")}
    figures = {p.name for p in (rep / "figures").iterdir()}
    assert {f"mnist5k-smoke-{k}.png" for k in ("recon", "samples", "morph", "losses", "metrics", "throughput")} \
        == figures  # no side-view grid: that one is for celeba

    # the CSV holds mean and sample std over the 2 seeds of what the store holds, rows in registry order
    # the detail tables hold every key exactly once; the main table a few of them
    details = [pd.read_csv(rep / "tables" / f"mnist5k-smoke-{v}.csv") for v in sorted(views - {"main"})]
    keys = [c for d in details for c in d.columns if f"{c}_std" in d.columns]
    assert len(keys) == len(set(keys)) and set(keys) == {k for _, k in _store_means(smoke_out / "results.db")}
    csv = pd.concat([d.set_index("method") for d in details], axis=1).reset_index()
    csv = csv.loc[:, ~csv.columns.duplicated()]
    assert list(csv["method"]) == ["faae", "aae"] and list(csv["seeds"]) == [2, 2]
    main = pd.read_csv(rep / "tables" / "mnist5k-smoke-main.csv")
    assert {"recon_mse", "reencode_ratio"} <= set(main.columns) and "recon_psnr" not in main.columns
    for (variant, key), vals in _store_means(smoke_out / "results.db").items():
        row = csv[csv["method"] == variant].iloc[0]
        assert row[key] == pytest.approx(statistics.fmean(vals), rel=1e-12)
        assert row[f"{key}_std"] == pytest.approx(statistics.stdev(vals), rel=1e-12)
    # best marking: lower is better for these keys, higher for throughput
    for key in ("recon_mse", "reencode_error", "reencode_ratio"):
        assert list(csv[f"{key}_best"]) == list(csv[key] == csv[key].min()), key

    md = (rep / "report.md").read_text()
    assert "## Dataset mnist5k" in md and "| faae " in md and "**" in md
    assert "(figures/mnist5k-smoke-recon.png)" in md and "/runs/faae-mnist5k-smoke-s0-" in md
    tex = (rep / "tables" / "mnist5k-smoke-main.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"recon\_mse $\downarrow$" in tex and r"\textbf{" in tex
    html = html_path.read_text()
    # self-contained: every image inline, none linked from disk
    assert html.count("<img") == html.count('src="data:image/png;base64,') == 6
    assert html.count('class="dataframe results"') == len(views) + 1  # and where the time goes
    # where the time goes: training from the store's runs, one row per metric evaluated, their sum
    time = pd.read_csv(rep / "tables" / "mnist5k-smoke-time.csv").set_index("stage")
    assert list(time.index) == ["training", "mse", "reencode", "evaluation (total)"]
    assert list(time.columns) == ["faae", "aae"] and (time.loc["training"] > 0).all()
    assert time.loc["evaluation (total)"].to_numpy() == pytest.approx(time.loc[["mse", "reencode"]].sum().to_numpy(),
                                                                       rel=0.02, abs=0.002)
    assert "#### Where the time goes" in md
    # provenance on demand: collapsed, after the tables
    assert "<details><summary>Provenance and notes" in html and "<details open" not in html
    # the recon grid: real images, faae, aae, one row each
    from PIL import Image

    with Image.open(rep / "figures" / "mnist5k-smoke-recon.png") as img:
        assert img.height == (3 * (32 + G.PAD) + G.PAD) * G.display_scale(32)


@pytest.mark.slow
def test_sample_grids_need_no_data_root(smoke_out, tmp_path, monkeypatch):
    """Without the held-out images, grids of real images are left out with a note, while sample grids are
    drawn from the checkpoint, which records the data shape the nets were built for."""
    from bench.core.data import DatasetError
    from reports.render import DataCache

    def unavailable(self, run):
        raise DatasetError("dataset mnist5k not found\nexpected layout ...")

    monkeypatch.setattr(DataCache, "get", unavailable)
    write_report(smoke_out / "results.db", tmp_path, plots=False, log=quiet)
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"mnist5k-smoke-samples.png"}
    md = (tmp_path / "report.md").read_text()
    assert "not drawn, the held-out images are unavailable (dataset mnist5k not found); pass --data-root." in md


@pytest.mark.slow
def test_report_is_deterministic_and_cached(smoke_out, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_report(smoke_out / "results.db", a, log=quiet)
    write_report(smoke_out / "results.db", b, log=quiet)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    # regenerating without new results draws nothing and rewrites nothing
    stamps = {f: (a / f).stat().st_mtime_ns for f in files}
    lines: list[str] = []
    write_report(smoke_out / "results.db", a, log=lines.append)
    assert lines == []
    assert stamps == {f: (a / f).stat().st_mtime_ns for f in files}


@pytest.mark.slow
def test_report_with_missing_metrics_and_split_tables(smoke_out, tmp_path):
    """n/a (NULL: capability missing) and not-evaluated keys render without a crash; a run evaluated under
    other settings (image count) goes to its own table instead of being mixed in."""
    out = tmp_path / "out"
    shutil.copytree(smoke_out, out, ignore=shutil.ignore_patterns("report", "runs"))
    store = Store(out / "results.db")
    runs = {(r["variant"], r["seed"]): r["run_id"] for r in store.runs()}
    for seed in (0, 1):
        # aae: reencode as a method lacking "sample" would store it (value NULL with a reason) ...
        store.put_metrics(runs[("aae", seed)], "reencode", [
            MetricValue("reencode_error", None, {"reason": "method lacks sample"}),
            MetricValue("reencode_ratio", None, {"reason": "method lacks sample"}),
            MetricValue("reencode_angle_deg", None, {"reason": "method lacks sample"})])
        # ... and mse never evaluated
        with store.transaction() as con:
            con.exec_driver_sql("DELETE FROM metrics WHERE metric='mse' AND run_id=?", (runs[("aae", seed)],))
    # faae seed 1's mse evaluated on another number of images: not comparable with the others
    old = [m for m in store.metric_rows([runs[("faae", 1)]]) if m["metric"] == "mse"]
    store.put_metrics(runs[("faae", 1)], "mse", [MetricValue(m["key"], m["value"], {**m["provenance"], "n_images": 32})
                                                 for m in old])
    tables = build_tables(load_results(out / "results.db"))
    assert [(t.part, t.parts) for t in tables] == [(1, 2), (2, 2)]
    main, other = tables
    assert [r.label for r in main.rows] == ["faae", "aae"] and [len(r.runs) for r in main.rows] == [1, 2]
    assert [r.label for r in other.rows] == ["faae"] and [r.seed for r in other.rows[0].runs] == [1]
    aae = main.rows[1]
    assert aae.cells["reencode_error"].status == NA and aae.cells["recon_mse"].status == MISSING
    assert not aae.cells["reencode_error"].best
    assert any("n/a for aae: method lacks sample (reencode_error, reencode_ratio" in n for n in main.footnotes)
    assert "n/a" in to_csv(main)

    write_report(out / "results.db", out / "report", grids=False, plots=False, log=quiet)
    md = (out / "report" / "report.md").read_text()
    assert "mnist5k, protocol smoke (part 1 of 2: evaluation settings differ)" in md
    tables_dir = out / "report" / "tables"
    # the detail tables of part 1 (the main table repeats some keys) hold each key once
    table_md = "".join(p.read_text() for p in sorted(tables_dir.glob("mnist5k-smoke-1-*.md")) if "-main" not in p.name)
    aae_lines = [line for line in table_md.splitlines() if line.startswith("| aae")]
    assert sum(line.count("n/a") for line in aae_lines) == 3 and sum(line.count("—") for line in aae_lines) == 2
    assert "n_images=32" in "".join(p.read_text() for p in tables_dir.glob("mnist5k-smoke-2-*.md"))
    assert "n_images=32" not in table_md


@pytest.mark.slow
def test_refinement_method_grids_use_the_base_checkpoint(smoke_out, tmp_path, monkeypatch):
    """faae+sc does not train: its grids come from faae's checkpoint (found as the runner finds it); without
    that checkpoint it is left out of the grids with a note."""
    from PIL import Image

    from bench.cli import main

    monkeypatch.setenv("AEGAN_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    shutil.copytree(smoke_out, out, ignore=shutil.ignore_patterns("report"))
    assert main(["run", "--methods", "faae+sc", "--protocol", "smoke", "--seeds", "0", "--metrics", "mse",
                 "--out", str(out), "--no-progress", "--no-report"]) == 0
    report = out / "report"
    write_report(out / "results.db", report, methods=["faae", "faae+sc"], plots=False, log=quiet)
    with Image.open(report / "figures" / "mnist5k-smoke-recon.png") as img:  # real, faae, faae+sc
        assert img.height == (3 * (32 + G.PAD) + G.PAD) * G.display_scale(32)
    assert "Runs: faae s0, faae+sc s0." in (report / "report.md").read_text()

    base = next((out / "runs").glob("faae-mnist5k-smoke-s0-*")) / "last.pt"
    base.unlink()  # faae's own grids load the original run directory the store points to
    lines: list[str] = []
    write_report(out / "results.db", report, methods=["faae", "faae+sc"], plots=False, log=lines.append)
    assert "report: drawing mnist5k-smoke-recon.png" in lines  # the checkpoint changed: redrawn
    with Image.open(report / "figures" / "mnist5k-smoke-recon.png") as img:  # real, faae
        assert img.height == (2 * (32 + G.PAD) + G.PAD) * G.display_scale(32)
    assert f"faae+sc: no checkpoint at {base}" in (report / "report.md").read_text()


@pytest.mark.slow
def test_report_command(smoke_out, tmp_path, capsys):
    from bench.cli import main

    rep = tmp_path / "only-aae"
    assert main(["report", "--out", str(smoke_out), "--report-dir", str(rep), "--methods", "aae*", "--no-figures"]) == 0
    assert str(rep / "report.html") in capsys.readouterr().out
    csv = pd.read_csv(rep / "tables" / "mnist5k-smoke-main.csv")
    assert list(csv["method"]) == ["aae"]
    assert main(["report", "--out", str(smoke_out), "--datasets", "cifar10"]) == 2
    assert "no run in" in capsys.readouterr().err
    assert main(["report", "--store", str(tmp_path / "none.db")]) == 2
    assert "no results store" in capsys.readouterr().err
