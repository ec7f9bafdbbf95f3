"""Claims checked on a report's runs: undecided below MIN_SEEDS seeds per side, one-sided Welch tests Holm-corrected
across every key of every claim, sharpness read as closeness to 1, methods that have not learned named, missing
keys named, several configurations of one method; the paper's claims registered; user claims from TOML."""

from __future__ import annotations

import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from bench.core.config import ConfigError
from bench.core.store import Store
from metrics.base import MetricValue
from reports.claims import (
    CLAIMS,
    MIN_SEEDS,
    NOT_SUPPORTED,
    SUPPORTED,
    UNDECIDED,
    Claim,
    check_all,
    describe,
    load_claims,
    registered,
)
from reports.learned import MAX_REENCODE_RATIO
from reports.results import load_results
from reports.tables import NOT_LEARNED, build_tables, display_frame

#: values with which every learned test passes (reports.learned): inversion, reconstruction, generation
LEARNED = {"reencode_ratio": 0.1, "recon_mse": 0.01, "recon_mse_random_pair": 0.1, "fid_samples": 20.0}
PROV = {"dataset": "mnist5k", "split": "test", "n_images": 64, "device": "cpu", "single_image_fid": 100.0}


def store_runs(tmp_path, runs: dict[str, list[dict[str, float]]], configs: dict[str, dict] | None = None):
    """A store holding, per row label ("faae", or "faae@2" for a second configuration of faae), one run per seed
    with the given values on top of LEARNED; returns the report's tables and values."""
    store = Store(tmp_path / "results.db")
    for label, seeds in runs.items():
        method, _, cfg = label.partition("@")
        for seed, vals in enumerate(seeds):
            run_id = f"{method}-mnist5k-smoke-s{seed}-{cfg or 'a'}"
            store.upsert_run(run_id, method=method, variant=method, dataset="mnist5k", protocol="smoke", seed=seed,
                             config_json={"method": method, "seed": seed, "cfg": cfg, **(configs or {})},
                             config_hash=run_id[-12:], code_version="git:test", packages_json={}, device="cpu",
                             dtype="fp32", run_dir="/nowhere", status="done")
            values = {**LEARNED, **vals}
            store.put_metrics(run_id, "mse", [MetricValue(k, v, {**PROV, "seed": seed}) for k, v in values.items()])
    results = load_results(tmp_path / "results.db")
    return build_tables(results), results.values


def seeds(key: str, *values: float) -> list[dict[str, float]]:
    return [{key: v} for v in values]


def only(report):
    (checked,) = [c for cs in report.by_table.values() for c in cs]
    return checked


MSE_CLAIM = Claim("t", "F-AAE reconstructs closer", "test", "faae", "aae", ("lpips",))


# --- seeds --------------------------------------------------------------------------------------------------
def test_one_seed_per_method_decides_no_registered_claim(tmp_path):
    """Every key of every registered claim, F-AAE 10x better on each, one seed: all undecided, with numbers and
    what to run; the same difference with MIN_SEEDS seeds supports them all."""
    keys = {k for c in registered() for k in c.keys}
    good = {k: 1.0 for k in keys} | {"recon_sharpness_ratio": 1.0, "sample_sharpness_ratio": 1.0}
    bad = {k: 10.0 for k in keys} | {"recon_sharpness_ratio": 0.1, "sample_sharpness_ratio": 0.1}
    good["reencode_ratio"], bad["reencode_ratio"] = 0.05, 0.5  # both pass the inversion test
    good["recon_mse"], bad["recon_mse"] = 0.01, 0.04
    tables, values = store_runs(tmp_path / "one", {"faae": [good], "aae": [bad], "bigan": [bad]})
    report = check_all(tables, values)
    checked = [c for cs in report.by_table.values() for c in cs]
    assert len(checked) == len(CLAIMS) and report.tests == 0
    for c in checked:
        assert c.verdict == UNDECIDED, describe(c)
        assert c.reasons == ("1 seed per side: run --seeds 0,1,2",)
        assert "1 seed per side" in describe(c) and all(e.change for e in c.evidence)
    jitter = [{k: v * (1 + 0.01 * i) for k, v in d.items()} for i, d in enumerate([good] * MIN_SEEDS)]
    worse = [{k: v * (1 + 0.01 * i) for k, v in d.items()} for i, d in enumerate([bad] * MIN_SEEDS)]
    tables, values = store_runs(tmp_path / "three", {"faae": jitter, "aae": worse, "bigan": worse})
    report = check_all(tables, values)
    assert {c.verdict for cs in report.by_table.values() for c in cs} == {SUPPORTED}
    assert report.tests == sum(len(c.keys) for c in registered())


def test_unequal_seeds_name_both_counts(tmp_path):
    tables, values = store_runs(tmp_path, {"faae": seeds("lpips", 0.1, 0.11, 0.12), "aae": seeds("lpips", 0.5, 0.6)})
    c = only(check_all(tables, values, [MSE_CLAIM]))
    assert c.verdict == UNDECIDED and c.reasons[0].startswith("faae has 3 seeds, aae 2: run --seeds 0,1,2")


@pytest.mark.parametrize(("faae", "aae", "verdict"), [
    ([0.10, 0.11, 0.12], [0.50, 0.52, 0.51], SUPPORTED),  # planted difference far beyond the seed spread
    ([0.50, 0.52, 0.51], [0.10, 0.11, 0.12], NOT_SUPPORTED),  # the reverse
    ([0.30, 0.60, 0.45], [0.46, 0.50, 0.48], UNDECIDED),  # a planted 6% gain inside the seed spread
])
def test_verdict_from_one_sided_welch(tmp_path, faae, aae, verdict):
    tables, values = store_runs(tmp_path, {"faae": seeds("lpips", *faae), "aae": seeds("lpips", *aae)})
    c = only(check_all(tables, values, [MSE_CLAIM]))
    assert c.verdict == verdict and not c.reasons
    (e,) = c.evidence
    # lower is better: the claim's test is "faae less than aae", one-sided
    assert e.p_value == pytest.approx(sps.ttest_ind(faae, aae, equal_var=False, alternative="less").pvalue)
    assert e.p_reverse == pytest.approx(sps.ttest_ind(faae, aae, equal_var=False, alternative="greater").pvalue)
    assert e.p_holm == pytest.approx(e.p_value)  # a family of one


# --- Holm across keys and claims ----------------------------------------------------------------------------
def test_holm_corrects_every_key_of_every_claim_together(tmp_path):
    """Four key tests of two claims, each one-sided p ~ 0.02: one alone is supported, together none survives Holm;
    the corrected p-values are statsmodels' over the report's whole family."""
    better, worse = (1.0, 1.1, 1.2), (1.25, 1.35, 1.45)
    keys = ("lpips", "cycle_mse", "fid_recon", "kid_samples")
    runs = {"faae": [dict.fromkeys(keys, v) for v in better], "aae": [dict.fromkeys(keys, v) for v in worse],
            "bigan": [dict.fromkeys(keys, v) for v in worse]}
    tables, values = store_runs(tmp_path, runs)
    claims = [Claim("a", "a", "t", "faae", "aae", keys[:2]), Claim("b", "b", "t", "faae", "bigan", keys[2:])]
    raw = sps.ttest_ind(better, worse, equal_var=False, alternative="less").pvalue
    assert 0.01 < raw < 0.05
    alone = only(check_all(tables, values, [Claim("c", "c", "t", "faae", "aae", ("lpips",))]))
    assert alone.verdict == SUPPORTED and alone.evidence[0].p_holm == pytest.approx(raw)
    report = check_all(tables, values, claims)
    checked = [c for cs in report.by_table.values() for c in cs]
    assert report.tests == 4 and [c.verdict for c in checked] == [UNDECIDED, UNDECIDED]
    evidence = [e for c in checked for e in c.evidence]
    expect = multipletests([e.p_value for e in evidence], method="holm")[1]
    assert [e.p_holm for e in evidence] == pytest.approx(list(expect))
    assert all(e.p_value == pytest.approx(raw) and e.p_holm >= 0.05 for e in evidence)
    assert "Holm" in describe(checked[0]) and "Holm" in report.rules() and "4 key test(s)" in report.rules()


# --- sharpness: closest to 1 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("far", [3.0, 1 / 3])
def test_a_sharpness_ratio_far_from_1_never_beats_one_close_to_1(tmp_path, far):
    sharper = Claim("s", "F-AAE reconstructs sharper", "test", "faae", "aae", ("recon_sharpness_ratio",))
    near = seeds("recon_sharpness_ratio", 1.1, 1.12, 1.08)
    off = seeds("recon_sharpness_ratio", far, far * 1.02, far * 0.98)
    tables, values = store_runs(tmp_path / "a", {"faae": off, "aae": near})
    assert only(check_all(tables, values, [sharper])).verdict == NOT_SUPPORTED
    tables, values = store_runs(tmp_path / "b", {"faae": near, "aae": off})
    assert only(check_all(tables, values, [sharper])).verdict == SUPPORTED
    (table,) = tables
    best = {row.label: row.cells["recon_sharpness_ratio"].best for row in table.rows}
    assert best == {"faae": True, "aae": False}


# --- learned or named ----------------------------------------------------------------------------------------
def test_a_claim_against_a_method_that_has_not_learned_is_undecided_and_names_it(tmp_path):
    """BiGAN's re-encoding ratio ~1: the inversion claim is undecided naming BiGAN and why, however far apart the
    numbers; the main table marks BiGAN's gated cells."""
    faae = [{"reencode_ratio": r, "cycle_mse": c} for r, c in ((0.10, 0.01), (0.11, 0.011), (0.12, 0.012))]
    bigan = [{"reencode_ratio": r, "cycle_mse": c} for r, c in ((0.995, 0.5), (1.0, 0.52), (0.99, 0.51))]
    tables, values = store_runs(tmp_path, {"faae": faae, "bigan": bigan})
    c = only(check_all(tables, values, [CLAIMS.get("faae-inverse-than-bigan")]))
    assert c.verdict == UNDECIDED
    assert c.reasons == (f"bigan has not learned to invert its generator (reencode_ratio 0.995 >= {MAX_REENCODE_RATIO})",)
    assert "bigan has not learned to invert its generator" in describe(c)
    (table,) = tables
    (main,) = [v for v in table.views() if v.view == "main"]
    frame = display_frame(main).set_index("method")
    assert frame.loc["bigan", "reencode_ratio ↓"].endswith(NOT_LEARNED)
    assert not frame.loc["faae", "reencode_ratio ↓"].endswith(NOT_LEARNED)
    assert any(n.startswith(f"{NOT_LEARNED} bigan has not learned to invert") for n in table.footnotes)


def test_sample_claims_need_samples_better_than_a_collapsed_generator(tmp_path):
    samples = Claim("g", "F-AAE samples better", "test", "faae", "aae", ("kid_samples",))
    tables, values = store_runs(tmp_path, {"faae": seeds("kid_samples", 0.1, 0.11, 0.12),
                                           "aae": [{"kid_samples": v, "fid_samples": 150.0} for v in (0.5, 0.5, 0.6)]})
    c = only(check_all(tables, values, [samples]))
    # aae's FID 150 is above the collapsed generator's (100): not learned; faae's 20 is below
    assert c.verdict == UNDECIDED and len(c.reasons) == 1 and c.reasons[0].startswith("aae has not learned to generate")


# --- keys and rows ---------------------------------------------------------------------------------------------
def test_a_missing_key_leaves_the_claim_undecided_naming_it(tmp_path):
    claim = Claim("x", "x", "test", "faae", "aae", ("lpips", "fid_recon"))
    tables, values = store_runs(tmp_path, {"faae": [{"lpips": v, "fid_recon": 1.0} for v in (0.1, 0.11, 0.12)],
                                           "aae": seeds("lpips", 0.5, 0.52, 0.51)})
    c = only(check_all(tables, values, [claim]))
    assert c.verdict == UNDECIDED and c.reasons == ("fid_recon not measured for aae",)
    assert [e.key for e in c.evidence] == ["lpips", "fid_recon"]  # the measured key's numbers are still shown


def test_claims_need_both_methods_in_a_table(tmp_path):
    tables, values = store_runs(tmp_path, {"faae": seeds("lpips", 0.1)})
    assert check_all(tables, values, [MSE_CLAIM]).by_table == {}


def test_two_configurations_of_one_method_are_each_checked(tmp_path):
    tables, values = store_runs(tmp_path, {"faae": seeds("lpips", 0.10, 0.11, 0.12),
                                           "faae@2": seeds("lpips", 0.50, 0.52, 0.51),
                                           "aae": seeds("lpips", 0.30, 0.31, 0.32)})
    checked = [c for cs in check_all(tables, values, [MSE_CLAIM]).by_table.values() for c in cs]
    assert len(checked) == 2 and all("(cfg " in c.better for c in checked)
    assert sorted(c.verdict for c in checked) == [NOT_SUPPORTED, SUPPORTED]


def test_the_papers_claims_are_registered_and_users_add_more_from_toml(tmp_path):
    assert {"faae-sharper-than-aae", "faae-closer-than-bigan"} <= set(CLAIMS)
    good = tmp_path / "claims.toml"
    good.write_text('[mine]\ntext = "F-AAE beats ALI"\nsource = "notes"\nbetter = "faae"\nthan = "ali"\n'
                    'keys = ["recon_mse"]\n')
    (claim,) = load_claims(good)
    assert claim == Claim("mine", "F-AAE beats ALI", "notes", "faae", "ali", ("recon_mse",))
    bad = tmp_path / "bad.toml"
    bad.write_text('[mine]\ntext = "x"\nbetter = "faae"\nthan = "ali"\nkeys = []\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="missing \\['source'\\], unknown \\['colour'\\]"):
        load_claims(bad)
