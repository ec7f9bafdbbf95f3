"""Variants: inline and TOML definitions, their validation (exit 2 naming valid keys), and what a run records."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.core.config import ConfigError, parse_overrides
from bench.core.provenance import code_version
from bench.core.registry import UnknownNameError
from bench.core.store import Store
from bench.runs.resolve import (
    Variant,
    load_variants,
    parse_method_spec,
    parse_methods,
    resolve_variant,
    split_top_level,
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One dataset decode for every trained test of the session (each tmp_cache would decode mnist5k again)."""
    d = tmp_path_factory.getbasetemp() / "shared-dataset-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEGAN_BENCH_CACHE", str(d))
        yield d


def test_split_top_level_keeps_bracketed_commas():
    assert split_top_level("faae[a.b=1,c.d=2], aae ,x[e.f=3]") == ["faae[a.b=1,c.d=2]", "aae", "x[e.f=3]"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_top_level("faae[a.b=1")
    with pytest.raises(ConfigError, match="unbalanced"):
        split_top_level("faae]")


def test_inline_variant_names_and_overrides():
    v = parse_method_spec("faae[loss.rec_weight=30, train.batch_size=32]")
    assert v.base == "faae"
    assert v.name == "faae[loss.rec_weight=30,train.batch_size=32]"  # spaces dropped, order kept
    assert v.overrides == {"loss": {"rec_weight": "30"}, "train": {"batch_size": "32"}}
    named = parse_method_spec("faae[name=faae-rw30,loss.rec_weight=30]")
    assert named.name == "faae-rw30" and named.overrides == {"loss": {"rec_weight": "30"}}
    assert parse_method_spec("aae") == Variant("", "aae")


@pytest.mark.parametrize("spec,expect", [
    ("faae[]", "sets nothing"),
    ("faae[name=x]", "sets nothing"),
    ("faae[loss.rec_weight]", "must look like section.key=value"),
    ("faae[lss.rec_weight=1]", "unknown config section 'lss'"),
    ("faae[name=aae,loss.rec_weight=1]", "is a registered method"),
    ("faae[name=a/b,loss.rec_weight=1]", "letters, digits"),
    ("faae[loss.rec_weight=1]x", "must look like METHOD[section.key=value"),
])
def test_inline_variant_errors(spec, expect):
    with pytest.raises(ConfigError) as e:
        parse_method_spec(spec)
    assert expect in str(e.value)


def test_unknown_base_lists_methods_and_variants():
    with pytest.raises(UnknownNameError) as e:
        parse_method_spec("fae[loss.rec_weight=1]", {"faae-low": Variant("faae-low", "faae")})
    assert "unknown method or variant 'fae'" in str(e.value)
    assert "faae, aae" in str(e.value) and "faae-low" in str(e.value)


def test_duplicate_labels_refused():
    with pytest.raises(ConfigError, match="more than once"):
        parse_methods("faae,faae")


def write_toml(tmp_path, text: str):
    p = tmp_path / "variants.toml"
    p.write_text(text)
    return p


def test_toml_variants_chain_and_types(tmp_path):
    p = write_toml(tmp_path, """
[faae-low]
base = "faae"
description = "low reconstruction weight"
[faae-low.set]
"loss.rec_weight" = 0.01
"train.channels_last" = false

[faae-low-fp32]
base = "faae-low"
[faae-low-fp32.set]
"train.precision" = "fp32"
""")
    vs = load_variants(p)
    assert vs["faae-low"].overrides == {"loss": {"rec_weight": "0.01"}, "train": {"channels_last": "false"}}
    chained = vs["faae-low-fp32"]
    assert chained.base == "faae"
    assert chained.overrides["loss"] == {"rec_weight": "0.01"} and chained.overrides["train"]["precision"] == "fp32"
    cfg = resolve_variant(chained, "mnist5k", "smoke", 3)
    assert (cfg.method, cfg.variant, cfg.seed) == ("faae", "faae-low-fp32", 3)
    assert cfg.loss.rec_weight == 0.01 and cfg.train.precision == "fp32" and cfg.train.channels_last is False
    # a file variant takes further inline overrides
    v = parse_method_spec("faae-low[train.max_steps=7]", vs)
    assert v.base == "faae" and v.name == "faae-low[train.max_steps=7]"
    assert resolve_variant(v, "mnist5k", "smoke", 0).loss.rec_weight == 0.01


@pytest.mark.parametrize("text,expect", [
    ('[x]\nbase = "nope"\n', "unknown base method of variant 'x' 'nope'"),
    ('[faae]\nbase = "faae"\n', "is a registered method"),
    ('[x]\nbase = "faae"\nset = 3\n', "set must be a table"),
    ('[x]\nbase = "faae"\nextra = 1\n', "unknown key(s) extra; valid: base, set, description"),
    ('[x]\n[x.set]\n"loss.rec_weight" = 1\n', 'needs base = "METHOD"'),
    ('[x]\nbase = "faae"\n[x.set]\n"lossrec" = 1\n', "must look like section.key=value"),
    ('[a]\nbase = "b"\n[b]\nbase = "a"\n', "cycle"),
    ("[x\n", "not valid TOML"),
])
def test_toml_errors(tmp_path, text, expect):
    with pytest.raises((ConfigError, UnknownNameError)) as e:
        load_variants(write_toml(tmp_path, text))
    assert expect in str(e.value)


def test_variant_overrides_win_over_set():
    v = parse_method_spec("faae[loss.rec_weight=7]")
    cfg = resolve_variant(v, "mnist5k", "smoke", 0, parse_overrides(["loss.rec_weight=3", "loss.adv_weight=0.5"]))
    assert cfg.loss.rec_weight == 7.0 and cfg.loss.adv_weight == 0.5
    # the same config under another name is another run (the name is part of the identity)
    assert cfg.config_hash() != resolve_variant(parse_method_spec("faae[name=other,loss.rec_weight=7]"), "mnist5k",
                                                "smoke", 0, parse_overrides(["loss.adv_weight=0.5"])).config_hash()


@pytest.mark.parametrize("methods,expect", [
    ("faae[loss.rec_wieght=1]", "variant 'faae[loss.rec_wieght=1]': unknown key(s) loss.rec_wieght; valid: loss.rec_weight"),
    ("faae[train.batch_size=x]", "train.batch_size expects int"),
    ("faae[method.steps=3]", "faae has no method.* parameters"),
    ("faae[loss.rec_weight=1", "unbalanced '['"),
    ("faae-low", "unknown method or variant 'faae-low'"),
])
def test_run_rejects_bad_variants_with_exit_2(methods, expect, tmp_path, capsys):
    assert main(["run", "--methods", methods, "--protocol", "smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before anything trained


def test_run_rejects_bad_variants_file(tmp_path, capsys):
    assert main(["run", "--methods", "faae", "--variants", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    p = write_toml(tmp_path, '[low]\nbase = "faae"\n[low.set]\n"loss.nope" = 1\n')
    assert main(["run", "--methods", "low", "--variants", str(p), "--protocol", "smoke", "--out", str(tmp_path)]) == 2
    assert "variant 'low': unknown key(s) loss.nope; valid: loss.rec_weight" in capsys.readouterr().err


@pytest.mark.slow
def test_run_records_variant_hash_code_version_and_tags(tmp_path, shared_cache, capsys):
    p = write_toml(tmp_path, '[faae-low]\nbase = "faae"\n[faae-low.set]\n"loss.rec_weight" = 0.01\n')
    out = tmp_path / "out"
    args = ["run", "--methods", "faae-low,faae[name=faae-b32,train.batch_size=16]", "--variants", str(p),
            "--protocol", "smoke", "--set", "train.max_steps=2", "--metrics", "mse", "--out", str(out),
            "--no-progress", "--no-report", "--tag", "nightly", "--tag", "v1.0"]
    assert main(args) == 0, capsys.readouterr().err
    runs = {r["variant"]: r for r in Store(out / "results.db").runs()}
    assert set(runs) == {"faae-low", "faae-b32"}
    for label, r in runs.items():
        cfg = json.loads(r["config_json"])
        assert r["method"] == "faae" and cfg["variant"] == label
        assert r["run_id"].startswith(f"{label}-mnist5k-smoke-s0-") and r["run_id"].endswith(r["config_hash"])
        assert r["code_version"] == code_version() and r["code_version"]
        assert Store.split_tags(r["tags"]) == ["nightly", "v1.0"]
        assert r["status"] == "done" and (out / "runs" / r["run_id"] / "config.json").exists()
    assert json.loads(runs["faae-low"]["config_json"])["loss"]["rec_weight"] == 0.01
    assert json.loads(runs["faae-b32"]["config_json"])["train"]["batch_size"] == 16
    # running again with another tag adds it to the finished runs without retraining
    assert main([*args[:-4], "--tag", "rerun"]) == 0
    tags = {r["variant"]: Store.split_tags(r["tags"]) for r in Store(out / "results.db").runs()}
    assert tags == {"faae-low": ["nightly", "rerun", "v1.0"], "faae-b32": ["nightly", "rerun", "v1.0"]}


def test_bad_tag(tmp_path, capsys):
    assert main(["run", "--methods", "faae", "--tag", "a,b", "--out", str(tmp_path)]) == 2
    assert "--tag 'a,b'" in capsys.readouterr().err
