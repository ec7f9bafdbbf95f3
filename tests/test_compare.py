"""bench compare / baseline / history: selectors, the statistics, verdicts, provenance refusals and exit codes.

Pure statistics use small synthetic rows written through the real Store; one test trains real smoke runs."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats as sps

from bench.cli import main
from bench.compare import (
    IMPROVED,
    NOISE,
    NOT_GATED,
    REGRESSED,
    WITHIN_TOL,
    ProvenanceMismatch,
    Side,
    compare,
    compare_values,
    parse_selector,
    parse_tolerances,
    records_from_store,
    tolerance_for,
)
from bench.core.provenance import code_version
from bench.core.store import Store
from metrics.base import MetricValue

PROV = {"dataset": "mnist5k", "split": "test", "n_images": 64, "dtype": "bf16", "device": "cpu", "eval_seconds": 0.1}


def add_run(store: Store, variant: str, seed: int, values: dict[str, float | None], *, method: str = "faae",
            dataset: str = "mnist5k", protocol: str = "smoke", code: str = "git:aaaaaaaaaaaa", tags: str = "",
            status: str = "done", prov: dict | None = None) -> str:
    run_id = f"{variant}-{dataset}-{protocol}-s{seed}-{code[-4:]}"
    store.upsert_run(run_id, method=method, variant=variant, dataset=dataset, protocol=protocol, seed=seed,
                     config_json={"variant": variant}, config_hash=f"{abs(hash(run_id)) % 16**12:012x}",
                     code_version=code, packages_json={}, device="cpu:1 threads", dtype="bf16", run_dir="/nowhere",
                     status=status, tags=tags)
    p = {**PROV, "seed": seed, "dataset": dataset, **(prov or {})}
    store.put_metrics(run_id, "mse", [MetricValue(k, v, p) for k, v in values.items()])
    return run_id


def row(**kw):
    base = {"run_id": "faae-mnist5k-smoke-s0-abc", "method": "faae", "variant": "faae", "dataset": "mnist5k",
            "protocol": "smoke", "code_version": "git:abc123def456-dirty", "tags": ["nightly"], "seed": 0,
            "config_hash": "0123456789ab"}
    return {**base, **kw}


# --- selectors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sel,hit", [
    ("variant=faae,dataset=mnist5k", True),
    ("method=faae", True),
    ("variant=faae[loss.rec_weight=0]", False),
    ("faae", True),  # a bare word is a variant
    ("dataset=cifar10|mnist5k", True),
    ("dataset!=mnist5k", False),
    ("dataset=mnist*", True),
    ("code=git:abc123", True),  # a prefix, covering the -dirty form
    ("code=git:abc123def456-dirty", True),
    ("code=git:abd", False),
    ("tag=nightly", True),
    ("tag=night*", True),
    ("tag!=nightly", False),
    ("seed=0|1", True),
    ("seed=1", False),
    ("config=0123", True),
    ("run=faae-*-s0-*", True),
    ("protocol=quick", False),
    ("", True),
])
def test_selector_matches(sel, hit):
    assert parse_selector(sel).matches(row()) is hit


def test_selector_values_with_brackets_commas_and_globs():
    v = "faae[loss.rec_weight=0,train.max_steps=30]"
    sel = parse_selector(f"variant={v},dataset=mnist5k")
    assert [str(t) for t in sel.terms] == [f"variant={v}", "dataset=mnist5k"]
    assert sel.matches(row(variant=v)) and not sel.matches(row(variant="faae"))
    # brackets are literal in globs too (not character classes)
    assert parse_selector("variant=faae[*]").matches(row(variant="faae[loss.rec_weight=0]"))
    assert not parse_selector("variant=faae[*]").matches(row(variant="faaer"))


def test_selector_code_current():
    assert parse_selector("code=current").matches(row(code_version=code_version()))
    assert not parse_selector("code=current").matches(row(code_version="git:000000000000"))


@pytest.mark.parametrize("sel,expect", [
    ("colour=red", "unknown selector field 'colour'"),
    ("dataset=", "has no value"),
    ("variant=faae[x", "unbalanced"),
])
def test_selector_errors(sel, expect):
    from bench.cli import UsageError

    with pytest.raises(UsageError, match=expect):
        parse_selector(sel)


# --- statistics ------------------------------------------------------------------------------------------
LOW = [1.0, 1.1, 0.9]
HIGH = [2.0, 2.1, 1.9]


@pytest.mark.parametrize("base,cand,direction,verdict", [
    (LOW, HIGH, "lower", REGRESSED),  # doubled error
    (LOW, HIGH, "higher", IMPROVED),  # doubled accuracy
    (HIGH, LOW, "lower", IMPROVED),
    (HIGH, LOW, "higher", REGRESSED),
    ([1.0, 1.2, 0.8], [1.05, 1.25, 0.85], "lower", NOISE),  # +5% with a 20% spread
    ([1.0, 1.001, 0.999], [1.01, 1.011, 1.009], "lower", WITHIN_TOL),  # certain, but +1% < 5%
    ([1.0, 1.0], [2.0, 2.0], "lower", REGRESSED),  # no spread at all: any difference is certain
    ([1.0, 1.0], [1.0, 1.0], "lower", NOISE),
    ([1.0, 1.1, 0.9, 1.05, 0.95], [3.0], "lower", REGRESSED),  # one run far outside the seeds' spread
    ([1.0, 1.1, 0.9, 1.05, 0.95], [1.08], "lower", NOISE),  # one run inside it
    ([3.0], [1.0, 1.1, 0.9], "higher", REGRESSED),
])
def test_verdicts(base, cand, direction, verdict):
    assert compare_values(base, cand, direction).verdict == verdict


@pytest.mark.parametrize("far", [3.0, 1 / 3])
def test_a_ratio_closest_to_1_is_compared_as_its_log_distance(far):
    """Sharpness ratios: moving from 1.1 to 3.0 (or 1/3, or a flat image's 0) regresses, the way back improves; the
    numbers compared are |ln x|, and the note says so."""
    near = [1.1, 1.12, 1.08]
    off = [far, far * 1.02, far * 0.98]
    s = compare_values(near, off, "closest to 1")
    assert s.verdict == REGRESSED and s.direction == "closest to 1" and "|ln x|" in s.note
    assert s.mean_base == pytest.approx(sum(abs(math.log(x)) for x in near) / 3)
    assert compare_values(off, near, "closest to 1").verdict == IMPROVED
    assert compare_values([1.1], [1 / 1.1], "closest to 1", tolerance=0.05).verdict == WITHIN_TOL  # equally far
    assert compare_values([1.1], [0.0], "closest to 1").verdict == REGRESSED  # no edges at all: far from 1, finite


def test_welch_matches_scipy():
    b, c = [0.51, 0.55, 0.49, 0.53], [0.58, 0.61, 0.57]
    s = compare_values(b, c, "lower", tolerance=0.05)
    ref = sps.ttest_ind(c, b, equal_var=False)
    assert s.test == "welch" and s.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert s.diff == pytest.approx(sum(c) / 3 - sum(b) / 4) and s.verdict == REGRESSED


def test_one_seed_per_side_uses_the_tolerance():
    s = compare_values([1.0], [1.2], "lower", tolerance=0.05)
    assert (s.test, s.verdict, s.p_value, s.ci_low) == ("tolerance", REGRESSED, None, None)
    assert "no seed variance" in s.note
    assert compare_values([1.0], [1.04], "lower", tolerance=0.05).verdict == WITHIN_TOL
    assert compare_values([1.0], [1.2], "lower", tolerance=0.25).verdict == WITHIN_TOL
    assert compare_values([1.0], [0.8], "lower", tolerance=0.05).verdict == IMPROVED
    assert compare_values([100.0, 90.0], [10.0, 9.0], "higher", tolerance=math.inf).verdict == NOT_GATED
    zero = compare_values([0.0], [0.1], "lower")
    assert math.isinf(zero.rel) and zero.verdict == REGRESSED


def test_tolerances():
    tol = parse_tolerances(["recon_mse=0.02", "fid*=0.1"])
    assert tolerance_for("recon_mse", tol) == 0.02
    assert tolerance_for("fid_test", tol) == 0.1
    assert tolerance_for("reencode_error", tol) == 0.05
    assert math.isinf(tolerance_for("train_images_per_s", tol))  # timings move with machine load: not gated
    assert tolerance_for("train_images_per_s", parse_tolerances(["*per_s=0.3"])) == 0.3
    from bench.cli import UsageError

    for bad in ("recon_mse", "recon_mse=-1", "=0.1", "x=abc"):
        with pytest.raises(UsageError, match="KEY=REL"):
            parse_tolerances([bad])


# --- comparisons over a store ------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "out" / "results.db")
    for seed, (mse, ree) in enumerate([(0.20, 1.0), (0.21, 1.1), (0.19, 0.9)]):
        add_run(s, "faae", seed, {"recon_mse": mse, "reencode_error": ree}, tags="nightly")
    # a regression of the re-encoding error, pixels unchanged
    for seed, (mse, ree) in enumerate([(0.20, 2.0), (0.21, 2.2), (0.19, 1.8)]):
        add_run(s, "faae[loss.rec_weight=0]", seed, {"recon_mse": mse, "reencode_error": ree})
    # the same config again under other seeds
    for seed, (mse, ree) in zip((3, 4, 5), [(0.205, 1.05), (0.195, 0.95), (0.2, 1.02)]):
        add_run(s, "faae-again", seed, {"recon_mse": mse, "reencode_error": ree})
    return s


def side(store, role, sel):
    return Side(role, sel, records_from_store(store, parse_selector(sel)))


def test_compare_rows_and_summary(store):
    c = compare(side(store, "baseline", "faae"), side(store, "candidate", "faae[loss.rec_weight=0]"))
    verdicts = {r.key: r.stats.verdict for r in c.rows}
    assert verdicts == {"recon_mse": NOISE, "reencode_error": REGRESSED}
    assert c.regressed and c.rows[0].label == "faae -> faae[loss.rec_weight=0]"
    assert c.summary_line().startswith("REGRESSION: 1 regressed, 0 improved, 1 within noise")
    assert not compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-again")).regressed


def test_compare_pairs_by_label_when_sides_hold_several(store, tmp_path):
    add_run(store, "aae", 0, {"recon_mse": 0.1}, method="aae", code="git:bbbbbbbbbbbb")
    add_run(store, "aae", 0, {"recon_mse": 0.3}, method="aae", code="git:cccccccccccc")
    add_run(store, "faae", 0, {"recon_mse": 0.2, "reencode_error": 1.0}, code="git:cccccccccccc")
    c = compare(side(store, "baseline", "code=git:aaaa|git:bbbb"), side(store, "candidate", "code=git:cccc"))
    assert {(r.label, r.key): r.stats.verdict for r in c.rows} == {
        ("faae", "recon_mse"): NOISE, ("faae", "reencode_error"): NOISE, ("aae", "recon_mse"): REGRESSED}
    assert {r.stats.test for r in c.rows} == {"prediction", "tolerance"}


def test_provenance_refusals(store):
    add_run(store, "faae-more", 0, {"recon_mse": 0.2}, prov={"n_images": 128})
    with pytest.raises(ProvenanceMismatch, match="n_images: 64 vs 128"):
        compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-more"))
    add_run(store, "faae-quick", 0, {"recon_mse": 0.2}, protocol="quick")
    with pytest.raises(ProvenanceMismatch, match="different protocols"):
        compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-quick"))
    add_run(store, "faae-cifar", 0, {"recon_mse": 0.2}, dataset="cifar10")
    with pytest.raises(ProvenanceMismatch, match="nothing measured on the same data"):
        compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-cifar"))
    # another weights file behind the same key is another measurement
    add_run(store, "w1", 0, {"fid": 10.0}, prov={"weights_sha256": "aa"})
    add_run(store, "w2", 0, {"fid": 10.0}, prov={"weights_sha256": "bb"})
    with pytest.raises(ProvenanceMismatch, match="weights_sha256"):
        compare(side(store, "baseline", "w1"), side(store, "candidate", "w2"))
    # other hardware is allowed, with a warning
    add_run(store, "faae-fp32", 0, {"recon_mse": 0.2}, prov={"dtype": "fp32"})
    c = compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-fp32"))
    assert any("dtype" in w for w in c.warnings)


def test_outcome_diagnostics_and_timings_are_not_refused(store):
    """Solver iterations differ between any two runs; a timing measured another way is shown, not gated."""
    for seed, it in enumerate((31, 35)):
        add_run(store, "p1", seed, {"probe_accuracy": 0.8, "train_images_per_s": 100.0},
                prov={"n_iter": it, "timed_batches": 5})
        add_run(store, "p2", seed, {"probe_accuracy": 0.8, "train_images_per_s": 40.0},
                prov={"n_iter": it + 1, "timed_batches": 3, "n_images": 64 + (seed == 1)})
    with pytest.raises(ProvenanceMismatch, match="probe_accuracy.*n_images: 64 vs 65"):
        compare(side(store, "baseline", "p1"), side(store, "candidate", "p2"))
    c = compare(side(store, "baseline", "p1"), side(store, "candidate", "p2"), metrics=["train_images_per_s"])
    assert [r.stats.verdict for r in c.rows] == [NOT_GATED] and not c.regressed
    assert any("train_images_per_s" in w and "not gated" in w for w in c.warnings)
    c = compare(side(store, "baseline", "p1,seed=0"), side(store, "candidate", "p1,seed=1"))
    assert c.diagnostics == {"probe_accuracy": ["n_iter"], "train_images_per_s": ["n_iter"]}


def test_diverged_candidate_counts_as_regression(store):
    add_run(store, "faae-bad", 0, {"recon_mse": 0.2})
    add_run(store, "faae-bad", 1, {}, status="diverged")
    c = compare(side(store, "baseline", "faae"), side(store, "candidate", "faae-bad"))
    assert c.regressed and len(c.diverged) == 1 and "diverged" in c.summary_line()


# --- the commands and their exit codes -----------------------------------------------------------------------
def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_exit_codes(store, tmp_path, capsys):
    out = str(tmp_path / "out")
    code, text, _ = run_cli(capsys, "compare", "--baseline", "variant=faae", "--candidate",
                            "variant=faae[loss.rec_weight=0]", "--out", out)
    assert code == 1 and "REGRESSED" in text and "REGRESSION: 1 regressed" in text
    code, text, _ = run_cli(capsys, "compare", "--baseline", "tag=nightly", "--candidate", "faae-again", "--out", out)
    assert code == 0 and "OK: 0 regressed" in text and "Welch t test over 3 vs 3 seeds" in text
    # a tolerance wide enough accepts the regression; --metrics narrows what is compared
    code, _, _ = run_cli(capsys, "compare", "--baseline", "faae", "--candidate", "faae[loss.rec_weight=0]", "--out",
                         out, "--tolerance", "reencode_error=1.5")
    assert code == 0
    code, text, _ = run_cli(capsys, "compare", "--baseline", "faae", "--candidate", "faae[loss.rec_weight=0]",
                            "--out", out, "--metrics", "recon_mse", "--markdown")
    assert code == 0 and "| faae -> faae[loss.rec_weight=0] |" in text and "reencode_error" not in text
    code, text, _ = run_cli(capsys, "compare", "--baseline", "faae", "--candidate", "faae[loss.rec_weight=0]",
                            "--out", out, "--json")
    doc = json.loads(text)
    assert code == 1 and doc["regressed"] and doc["counts"][REGRESSED] == 1
    assert {r["key"]: r["verdict"] for r in doc["rows"]}["reencode_error"] == REGRESSED


@pytest.mark.parametrize("args,expect", [
    (["--baseline", "variant=nope", "--candidate", "faae"], "the baseline selector 'variant=nope' matches no finished run"),
    (["--baseline", "faae", "--candidate", "colour=red"], "unknown selector field 'colour'"),
    (["--baseline", "faae", "--candidate", "faae-again", "--tolerance", "x"], "must look like KEY=REL"),
    (["--baseline", "faae", "--candidate", "faae-again", "--metrics", "fid*"], "matches no metric both sides measured"),
    (["--baseline", "faae", "--candidate", "faae-again", "--alpha", "2"], "--alpha must be in (0, 1)"),
    (["--baseline", "missing.json", "--candidate", "faae"], "baseline file missing.json does not exist"),
])
def test_compare_usage_errors(store, tmp_path, capsys, args, expect, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "compare", *args, "--out", str(tmp_path / "out"))
    assert code == 2 and expect in err and "Traceback" not in err


def test_baseline_save_and_compare(store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    code, text, _ = run_cli(capsys, "baseline", "save", "main", "variant=faae", "--out", out)
    assert code == 0 and "wrote baselines/main.json: 3 run(s) of faae, 6 values" in text
    doc = json.loads((tmp_path / "baselines" / "main.json").read_text())
    assert doc["format"] == "aegan-bench-baseline/1" and doc["selector"] == "variant=faae"
    first = doc["runs"][0]
    assert {"config_hash", "code_version", "config", "packages", "device", "dtype"} <= set(first)
    assert first["metrics"]["recon_mse"]["provenance"]["n_images"] == 64
    # by name, by path; the store may since have lost the runs
    code, text, _ = run_cli(capsys, "compare", "--baseline", "main", "--candidate", "faae[loss.rec_weight=0]",
                            "--out", out)
    assert code == 1 and "baseline 'main' (baselines/main.json" in text
    code, _, _ = run_cli(capsys, "compare", "--baseline", str(tmp_path / "baselines" / "main.json"), "--candidate",
                         "faae-again", "--out", out)
    assert code == 0
    code, text, _ = run_cli(capsys, "baseline", "show", "main")
    assert code == 0 and "3 run(s)" in text and "reencode_error" in text
    code, text, _ = run_cli(capsys, "baseline", "list")
    assert code == 0 and text.startswith("main")
    # a baseline measured on other image counts is refused, with the reason
    first["metrics"]["recon_mse"]["provenance"]["n_images"] = 1000
    (tmp_path / "baselines" / "edited.json").write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "compare", "--baseline", "edited", "--candidate", "faae-again", "--out", out)
    assert code == 2 and "refusing to compare: recon_mse of faae -> faae-again" in err
    assert "measured differently within the baseline (n_images: 1000 vs 64)" in err
    for r in doc["runs"]:
        r["metrics"]["recon_mse"]["provenance"]["n_images"] = 1000
    (tmp_path / "baselines" / "edited.json").write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "compare", "--baseline", "edited", "--candidate", "faae-again", "--out", out)
    assert code == 2 and "measured differently between baseline and candidate (n_images: 1000 vs 64)" in err
    code, _, err = run_cli(capsys, "baseline", "save", "bad/name", "--out", out)
    assert code == 2 and "baseline name 'bad/name'" in err
    code, _, err = run_cli(capsys, "baseline", "save", "none", "variant=nope", "--out", out)
    assert code == 2 and "picks no finished runs" in err


def test_history_orders_code_versions_by_first_run(tmp_path, capsys):
    s = Store(tmp_path / "results.db")
    for code, vals in [("git:v1", [1.0, 1.2]), ("git:v2", [2.0, 2.2]), ("git:v0", [0.5])]:
        for seed, v in enumerate(vals):
            add_run(s, "faae", seed, {"reencode_error": v}, code=code)
    add_run(s, "faae", 9, {"reencode_error": 1.1}, code="git:v1")  # an old version run again later
    add_run(s, "aae", 0, {"reencode_error": 9.0}, method="aae", code="git:v1")
    code, text, _ = run_cli(capsys, "history", "--metric", "reencode_error", "--method", "faae", "--store",
                            str(tmp_path / "results.db"))
    assert code == 0
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if "git:" in line]
    # columns: dataset, protocol, code_version, first_run, runs, mean, std, min, max, change
    assert [c[2] for c in cells] == ["git:v1", "git:v2", "git:v0"]
    assert [(c[4], c[5], c[9]) for c in cells] == [("3", "1.1", ""), ("2", "2.1", "+90.9%"), ("1", "0.5", "-76.2%")]
    png = tmp_path / "history-reencode_error-faae.png"
    assert f"plot: {png}" in text and png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "history", "--metric", "fid", "--method", "faae", "--store",
                           str(tmp_path / "results.db"), "--no-plot")
    assert code == 2 and "keys there: reencode_error" in err


def test_several_stores_one_per_code_version(tmp_path, capsys):
    """A finished run is not retrained in the same output directory, so each code version (e.g. each CI run)
    writes its own store; history and compare read them together with a glob."""
    for code, vals in [("git:v1", (1.0, 1.2)), ("git:v2", (2.0, 2.2))]:
        s = Store(tmp_path / code[4:] / "results.db")
        for seed, v in enumerate(vals):
            add_run(s, "faae", seed, {"reencode_error": v}, code=code)  # the same run ids in both stores
    stores = str(tmp_path / "*" / "results.db")
    code, text, _ = run_cli(capsys, "history", "--metric", "reencode_error", "--method", "faae", "--store", stores,
                            "--no-plot")
    assert code == 0 and "git:v1" in text and "+90.9%" in text
    code, text, _ = run_cli(capsys, "compare", "--baseline", "code=git:v1", "--candidate", "code=git:v2", "--store",
                            stores)
    assert code == 1 and "2 stores" in text and "on both sides" not in text
    code, _, err = run_cli(capsys, "compare", "--baseline", "faae", "--candidate", "faae", "--store",
                           str(tmp_path / "none*" / "results.db"))
    assert code == 2 and "matches no file" in err


@pytest.mark.slow
def test_real_runs_identical_variant_is_within_noise(tmp_path, shared_cache, capsys, monkeypatch):
    """Trained smoke runs: a baseline of 2 seeds, then a variant that sets a default value again."""
    monkeypatch.chdir(tmp_path)
    common = ["--protocol", "smoke", "--seeds", "0,1", "--set", "train.max_steps=2", "--metrics", "reencode",
              "--out", "out", "--no-progress", "--no-report"]
    assert main(["run", "--methods", "faae", *common]) == 0
    assert main(["run", "--methods", "faae[name=faae-same,loss.rec_weight=100]", *common]) == 0
    capsys.readouterr()
    code, text, _ = run_cli(capsys, "baseline", "save", "smoke", "variant=faae", "--out", "out")
    assert code == 0 and "2 run(s) of faae" in text
    code, text, _ = run_cli(capsys, "compare", "--baseline", "smoke", "--candidate", "variant=faae-same", "--json",
                            "--out", "out")
    doc = json.loads(text)
    assert code == 0 and not doc["regressed"]
    from metrics import METRICS

    assert {r["key"] for r in doc["rows"]} == set(METRICS.get("reencode").keys)
    # same seeds, same config: CPU training repeats, so the differences are zero
    assert all(r["verdict"] == NOISE and abs(r["diff"]) < 1e-6 for r in doc["rows"])
