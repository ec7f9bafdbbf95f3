"""Claims checked on a report's runs: supported, not supported and undecided from seed statistics; the paper's
claims registered; user claims from TOML, validated."""

from __future__ import annotations

import pytest
from test_compare import add_run

from bench.core.config import ConfigError
from bench.core.store import Store
from reports.claims import CLAIMS, NOT_SUPPORTED, SUPPORTED, UNDECIDED, Claim, check, load_claims
from reports.results import load_results
from reports.tables import build_tables

SHARPER = Claim("t", "F-AAE reconstructs sharper", "test", "faae", "aae", ("recon_sharpness_ratio",))


def table(tmp_path, faae: list[float], aae: list[float]):
    store = Store(tmp_path / "results.db")
    for seed, v in enumerate(faae):
        add_run(store, "faae", seed, {"recon_sharpness_ratio": v})
    for seed, v in enumerate(aae):
        add_run(store, "aae", seed, {"recon_sharpness_ratio": v}, method="aae")
    results = load_results(tmp_path / "results.db")
    (t,) = build_tables(results)
    return t, results.values


@pytest.mark.parametrize(("faae", "aae", "verdict"), [
    ([0.60, 0.62, 0.61], [0.05, 0.06, 0.04], SUPPORTED),  # higher is better, far apart, 3 seeds each
    ([0.05, 0.06, 0.04], [0.60, 0.62, 0.61], NOT_SUPPORTED),
    ([0.30, 0.60, 0.45], [0.40, 0.50, 0.41], UNDECIDED),  # the seeds overlap: no significant difference
])
def test_verdict_from_seed_statistics(tmp_path, faae, aae, verdict):
    t, values = table(tmp_path, faae, aae)
    checked = check(SHARPER, t, values)
    assert checked is not None and checked.verdict == verdict
    assert "Welch t test over 3 vs 3 seeds" in checked.evidence[0].basis


def test_one_seed_per_side_says_so(tmp_path):
    t, values = table(tmp_path, [0.6], [0.05])
    checked = check(SHARPER, t, values)
    assert checked.verdict == SUPPORTED and "1 seed per side" in checked.evidence[0].basis


def test_claims_need_both_methods_and_a_deciding_key(tmp_path):
    t, values = table(tmp_path, [0.6], [0.05])
    assert check(Claim("x", "x", "x", "faae", "bigan", ("recon_sharpness_ratio",)), t, values) is None
    assert check(Claim("x", "x", "x", "faae", "aae", ("fid_recon",)), t, values) is None


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
