"""Plugins: a method registered from a module outside the packages (tests/plugin_example) by --plugin,
by $AEGAN_BENCH_PLUGINS and by an installed package's entry point, then trained by `bench run`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.store import Store
from methods import METHODS, plugins

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "tests" / "plugin_example"
EXAMPLE = EXAMPLE_DIR / "aegan_plugin_example.py"


@pytest.fixture
def clean_registry(monkeypatch):
    """Undo the plugin's registration afterwards: other tests list the built-in methods exactly."""
    items = dict(METHODS._items)
    loaded = dict(plugins.LOADED)
    modules = set(sys.modules)
    yield
    METHODS._items.clear()
    METHODS._items.update(items)
    plugins.LOADED.clear()
    plugins.LOADED.update(loaded)
    for name in set(sys.modules) - modules:
        if name.startswith("aegan_"):
            del sys.modules[name]


def test_load_by_path_registers_once(clean_registry):
    assert "plain-ae" not in METHODS
    mod = plugins.load_plugin(str(EXAMPLE))
    assert METHODS.get("plain-ae") is mod.PlainAE
    assert plugins.load_plugin(str(EXAMPLE)) is mod  # idempotent: no "already registered" on a second load
    assert mod.__name__ not in ("aegan_plugin_example", "methods")


def test_load_by_module_name(clean_registry, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    mod = plugins.load_plugin("aegan_plugin_example")
    assert mod.__name__ == "aegan_plugin_example" and "plain-ae" in METHODS


@pytest.mark.parametrize("spec,expect", [
    ("no_such_plugin_module", "cannot be imported: not found on sys.path"),
    ("/nonexistent/plugin.py", "does not exist"),
])
def test_missing_plugin_is_a_usage_error(spec, expect, tmp_path, capsys, clean_registry):
    assert main(["run", "--methods", "faae", "--plugin", spec, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_plugin_that_registers_a_taken_name(tmp_path, capsys, clean_registry):
    bad = tmp_path / "dupe.py"
    bad.write_text("from methods import METHODS\nfrom methods.faae import FAAE\n\n\n@METHODS.register('faae')\n"
                   "class Again(FAAE):\n    pass\n")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_dependency_xyz\n")
    assert main(["run", "--methods", "faae", "--plugin", str(bad), "--out", str(tmp_path)]) == 2
    assert "method 'faae' is already registered" in capsys.readouterr().err
    assert main(["run", "--methods", "faae", "--plugin", str(broken), "--out", str(tmp_path)]) == 2
    assert "failed to import: No module named 'no_such_dependency_xyz'" in capsys.readouterr().err


def test_env_var_plugin_in_list(clean_registry, monkeypatch, capsys):
    monkeypatch.setenv(plugins.ENV_VAR, str(EXAMPLE))
    assert main(["list", "methods"]) == 0
    assert "plain-ae" in capsys.readouterr().out


def test_entry_point_group(clean_registry, monkeypatch, tmp_path, capsys):
    """An installed distribution (a real .dist-info on sys.path) naming the Method class in the group."""
    site = tmp_path / "site"
    dist = site / "aegan_plugin_example-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aegan-plugin-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nplain-ae = aegan_plugin_example:PlainAE\n")
    (site / "aegan_plugin_example.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(site))
    assert main(["list", "methods", "plain*"]) == 0
    assert "plain-ae" in capsys.readouterr().out
    assert any(k.startswith("entry-point:plain-ae=") for k in plugins.LOADED)


@pytest.mark.slow
def test_run_a_plugin_method_and_its_variant(tmp_path, shared_cache, capsys, clean_registry):
    out = tmp_path / "out"
    assert main(["run", "--plugin", str(EXAMPLE), "--methods", "plain-ae,plain-ae[method.noise=0.1]",
                 "--protocol", "smoke", "--set", "train.max_steps=2", "--metrics", "mse,reencode", "--out", str(out),
                 "--no-progress", "--no-report"]) == 0
    runs = {r["variant"]: r for r in Store(out / "results.db").runs()}
    assert set(runs) == {"plain-ae", "plain-ae[method.noise=0.1]"}
    assert all(r["method"] == "plain-ae" and r["status"] == "done" for r in runs.values())
    values = {m["key"]: m["value"] for m in Store(out / "results.db").metric_rows([runs["plain-ae"]["run_id"]])}
    assert values["recon_mse"] > 0 and values["reencode_error"] is None  # it provides no sampling: n/a
    assert main(["run", "--plugin", str(EXAMPLE), "--methods", "plain-ae[method.noise=-1]", "--protocol", "smoke",
                 "--out", str(out)]) == 2
    assert "method.noise must be >= 0" in capsys.readouterr().err
