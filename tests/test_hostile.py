"""Nothing collected that a run did not produce (issue 26): result files checked against their declared schema and
their own run, one file at a time; hostile names, paths, odd file types, seeds, variants, claims and --set values
answered in one line. The rows of the issue's table are example tests; the Hypothesis tests below them generate
hostile inputs (a bounded number here, many more under the `soak` marker), derandomized so that a failure replays.

No training: the two runs are written through the real Store as the runner writes them."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.core.paths import OddFileError
from bench.core.result_file import MAX_BYTES, RESULT, ResultFileError, read_result, write_result
from bench.core.store import RUN_COLUMNS, Store
from bench.runs.resolve import resolve_config
from metrics import MetricValue

PROV = {"dataset": "mnist5k", "split": "test", "n_images": 4, "dtype": "fp32", "device": "cpu"}


# --- two finished runs, as the runner stores them ---------------------------------------------------------------------
def add_run(out: Path, method: str, value: float) -> str:
    """One finished smoke run of `method` in out/results.db, with its result file in out/runs/<id>/."""
    cfg = resolve_config(method, "mnist5k", "smoke", 0, device=torch.device("cpu"))
    run_id = cfg.run_id()
    run_dir = out / "runs" / run_id
    run_dir.mkdir(parents=True)
    store = Store(out / "results.db")
    store.upsert_run(run_id, method=cfg.method, variant=cfg.label, dataset=cfg.dataset, protocol=cfg.protocol,
                     seed=cfg.seed, config_json=cfg.to_dict(), config_hash=cfg.config_hash(), dtype="fp32",
                     run_dir=str(run_dir.resolve()), code_version="git:0123456789ab", packages_json={"torch": "2"},
                     device="cpu", status="running")
    store.upsert_run(run_id, steps=6, train_seconds=1.5)
    store.put_metrics(run_id, "mse", [MetricValue("recon_mse", value, PROV),
                                      MetricValue("recon_mse_random_pair", 2 * value, PROV)])
    store.put_metrics(run_id, "image_quality", [MetricValue("recon_psnr", math.inf, {"why": "identical images"}),
                                                MetricValue("recon_ssim", None, {"reason": "method lacks it"})])
    store.set_status(run_id, "done")
    write_result(store, run_id, run_dir)
    return run_id


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An --out directory with a finished faae and aae run; its store is the collected state of both."""
    out = tmp_path_factory.mktemp("hostile") / "out"
    add_run(out, "faae", 0.01)
    add_run(out, "aae", 0.02)
    return out


def copy_of(template: Path, dest: Path) -> Path:
    """A copy of the template, collected once in place, so that its runs' run_dir is the copy's."""
    shutil.copytree(template, dest)
    assert collect(dest)[0] == 0
    return dest


@pytest.fixture
def out(template, tmp_path) -> Path:
    return copy_of(template, tmp_path / "out")


def ids(out: Path | None = None) -> tuple[str, str]:
    """The run ids of the template's faae and aae runs."""
    return tuple(resolve_config(m, "mnist5k", "smoke", 0, device=torch.device("cpu")).run_id() for m in ("faae", "aae"))


def snapshot(db: Path, run_id: str | None = None) -> tuple:
    store = Store(db, readonly=True)
    runs = [r for r in store.runs() if run_id is None or r["run_id"] == run_id]
    rows = [m for m in store.metric_rows() if run_id is None or m["run_id"] == run_id]
    return runs, rows


def collect(out: Path, store: Path | None = None) -> tuple[int, str, str]:
    argv = ["collect", "--out", str(out)] + (["--store", str(store)] if store else [])
    return cli(*argv)


def cli(*argv: str) -> tuple[int, str, str]:
    """main(argv) with its output captured (works inside Hypothesis examples, where capsys is not reset)."""
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main(list(argv))
    return code, o.getvalue(), e.getvalue()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def doc_of(out: Path, run_id: str) -> dict:
    return json.loads((out / "runs" / run_id / RESULT).read_text())


def put(out: Path, run_id: str, doc, directory: str | None = None) -> Path:
    path = out / "runs" / (directory or run_id) / RESULT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# --- the table, row by row -------------------------------------------------------------------------------
def test_written_files_are_valid_and_collect_twice_without_change(out, tmp_path):
    faae, aae = ids(out)
    values = {m["key"]: m["value"] for m in read_result(out / "runs" / faae / RESULT)["metrics"]}
    assert values["recon_psnr"] == math.inf and values["recon_ssim"] is None
    target = tmp_path / "central.db"
    code, printed, err = collect(out, target)
    assert code == 0 and "2 new" in printed and err == "", err
    assert snapshot(target) == snapshot(out / "results.db")
    assert collect(out, target)[:2] == (0, f"collected into {target}: 0 new, 0 updated, 2 unchanged run(s); "
                                           "0 refused result file(s)\n")


def test_another_runs_file_in_a_run_directory_is_refused(out):
    """Row 1: faae's file, every value 12345.0 and status failed, placed in aae's directory overwrote faae."""
    faae, aae = ids(out)
    before = snapshot(out / "results.db")
    doc = doc_of(out, faae)
    doc["run"]["status"] = "failed"
    for m in doc["metrics"]:
        m["value"] = 12345.0
    path = put(out, aae, doc)
    code, printed, err = collect(out)
    line = one_line(err)
    assert code == 1 and str(path) in line and "not this run's result file" in line and aae in line
    assert "1 refused" in printed and snapshot(out / "results.db") == before


def test_a_file_whose_id_is_not_its_configs_is_refused(out):
    faae, _ = ids(out)
    doc = doc_of(out, faae)
    config = json.loads(doc["run"]["config_json"])
    config["loss"]["rec_weight"] = 12345.0  # another config under the same id
    doc["run"]["config_json"] = json.dumps(config)
    before = snapshot(out / "results.db")
    put(out, faae, doc)
    code, _, err = collect(out)
    assert code == 1 and "its config makes run faae-mnist5k-smoke-s0-" in one_line(err)
    assert snapshot(out / "results.db") == before


@pytest.mark.parametrize("where,field,value,reason", [
    ("run", "run_id", "../../../../ESCAPE", "run.run_id"),
    ("run", "method", "../../../../ESCAPE", "run.method"),
    ("run", "dataset", "../../../../ESCAPE", "run.dataset"),
    ("metric", "key", "../../k", "metrics.0.key"),
    ("run", "status", "hacked", "run.status"),
    ("metric", "provenance_json", "[[[", "metrics.0.provenance_json"),
    ("metric", "provenance_json", "[1, 2]", "metrics.0.provenance_json"),
    ("run", "config_json", "{not json", "run.config_json"),
    ("metric", "value", "nan", "metrics.0.value"),
    ("run", "seed", "zero", "run.seed"),
    ("run", "steps", [1], "run.steps"),
    ("run", "created", "yesterday", "run.created"),
    ("metric", "value", True, "metrics.0.value"),
    ("metric", "value", {"a": 1}, "metrics.0.value"),
    ("run", "device", None, "run.device"),
    ("run", "seed", None, "run.seed"),
    ("run", "seed", 10**30, "run.seed"),
    ("run", "seed", -1, "run.seed"),
    ("run", "steps", 2**63, "run.steps"),
    ("run", "message", "a\x00b", "run.message"),
    ("run", "tags", "a,,b", "run.tags"),
])
def test_a_field_out_of_its_schema_is_refused_in_one_line(out, where, field, value, reason):
    """Rows 2-5: hostile names, statuses, JSON columns, types and integers too large for SQLite."""
    _, aae = ids(out)
    doc = doc_of(out, aae)
    (doc["run"] if where == "run" else doc["metrics"][0])[field] = value
    path = put(out, aae, doc)
    before = snapshot(out / "results.db")
    code, _, err = collect(out)
    line = one_line(err)
    assert code == 1 and line.startswith(f"skipped {path}: not a valid result file ({reason}"), line
    assert snapshot(out / "results.db") == before


def test_the_same_key_twice_and_rows_of_another_run_are_refused(out):
    faae, aae = ids(out)
    doc = doc_of(out, aae)
    doc["metrics"].append(dict(doc["metrics"][0]))
    put(out, aae, doc)
    assert "given more than once" in one_line(collect(out)[2])
    doc = doc_of(out, faae)
    doc["metrics"][0]["run_id"] = aae
    put(out, faae, doc)
    err = collect(out)[2]
    assert "metric rows name other runs" in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": ' + "[" * 100_000, "{" * 50_000])
def test_deep_nesting_is_refused_without_recursion(out, text):
    """Row 6: 100,000 nested brackets gave a RecursionError traceback."""
    _, aae = ids(out)
    put(out, aae, text)
    code, _, err = collect(out)
    assert code == 1 and "not a valid result file" in one_line(err)
    doc = doc_of(out, ids(out)[0])  # the same inside a JSON column
    doc["metrics"][0]["provenance_json"] = "[" * 100_000
    put(out, aae, doc)
    assert "metrics.0.provenance_json" in one_line(collect(out)[2])


def test_a_file_too_large_is_not_read(out):
    _, aae = ids(out)
    path = put(out, aae, " " * (MAX_BYTES + 1))
    assert f"skipped {path}: {MAX_BYTES + 1} bytes" in one_line(collect(out)[2])


def test_bad_config_json_never_reaches_the_readers(out):
    """Row 7: config_json "{not json" was collected (exit 0), then report, compare and history failed."""
    _, aae = ids(out)
    doc = doc_of(out, aae)
    doc["run"]["config_json"] = "{not json"
    put(out, aae, doc)
    assert collect(out)[0] == 1
    for argv in (["report", "--out", str(out), "--no-figures"],
                 ["history", "--metric", "recon_mse", "--method", "aae", "--no-plot", "--out", str(out)],
                 ["compare", "--baseline", "faae", "--candidate", "aae", "--out", str(out)]):
        code, _, err = cli(*argv)
        assert code in (0, 1, 2) and "Traceback" not in err and "JSONDecodeError" not in err, (argv, err)


def test_an_older_copy_never_rolls_the_run_back(out, tmp_path):
    """Row 8: a copy of result.json taken mid-training, collected after the run finished, set it back to running."""
    faae, _ = ids(out)
    doc = doc_of(out, faae)
    early = json.loads(json.dumps(doc))
    early["run"].update(status="running", steps=2, updated=doc["run"]["updated"] - 60)
    early["metrics"] = []
    put(out, faae, early)
    before = snapshot(out / "results.db")
    code, printed, err = collect(out)
    assert code == 0 and err == "" and "1 older than stored (kept)" in printed
    assert snapshot(out / "results.db") == before
    # the tampered faae of row 1 in its own directory: failed is behind done at the same step
    doc["run"]["status"] = "failed"
    put(out, faae, doc)
    assert collect(out)[0] == 0 and snapshot(out / "results.db") == before
    # into a store that has not seen the run, the early copy is new; the finished file then wins
    central = tmp_path / "central.db"
    put(out, faae, early)
    collect(out, central)
    assert Store(central).get_run(faae)["status"] == "running"
    doc["run"]["status"] = "done"
    put(out, faae, doc)
    collect(out, central)
    assert snapshot(central, faae) == snapshot(out / "results.db", faae)


def test_a_backup_copy_beside_the_run_is_not_collected(out):
    """Row 9: runs/<id>.bak/ was "updated" on every collect, run_dir pointing at the copy."""
    faae, _ = ids(out)
    shutil.copytree(out / "runs" / faae, out / "runs" / f"{faae}.bak")
    before = snapshot(out / "results.db")
    code, _, err = collect(out)
    line = one_line(err)
    assert code == 1 and f"{faae}.bak" in line and "not this run's result file" in line
    assert snapshot(out / "results.db") == before


def test_one_bad_file_never_stops_the_others(out, tmp_path):
    """A folder of two runs whose first has seed 10**30 ended with 0 runs in a fresh store."""
    faae, aae = ids(out)
    doc = doc_of(out, aae)
    doc["run"]["seed"] = 10**30
    put(out, aae, doc)
    central = tmp_path / "central.db"
    code, printed, err = collect(out, central)
    assert code == 1 and "1 new" in printed and aae in one_line(err)
    assert [r["run_id"] for r in Store(central).runs()] == [faae]


def test_odd_files_in_the_runs_folder_are_named(out):
    faae, aae = ids(out)
    (out / "runs" / aae / RESULT).unlink()
    (out / "runs" / aae / RESULT).mkdir()
    link = out / "runs" / "linked"
    link.symlink_to(out / "runs" / faae)
    code, _, err = collect(out)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2 and "Traceback" not in err
    assert any("not a regular file" in ln for ln in lines) and any("symbolic link" in ln for ln in lines)


def test_non_utf8_out_is_refused_naming_it(tmp_path, template):
    bad = tmp_path / "caf\udce9"  # b"caf\xe9": Latin-1, not UTF-8
    shutil.copytree(template, bad)
    for argv in (["collect", "--out", str(bad)],
                 ["run", "--methods", "faae", "--protocol", "smoke", "--out", str(bad)],
                 ["run", "--methods", "faae", "--protocol", "smoke", "--out", str(tmp_path / "o"), "--data-root",
                  str(bad)]):
        code, _, err = cli(*argv)
        assert code == 2 and "caf\\xe9" in one_line(err) and "not valid UTF-8" in err, err
    assert not (tmp_path / "o").exists()


# --- other inputs of the issue -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", ["-1,5", "99999999999999999999999", "4294967296", "1" * 5000])
def test_seeds_out_of_range_are_refused_before_anything_is_claimed(tmp_path, seeds):
    code, _, err = cli("run", "--methods", "faae", "--protocol", "smoke", f"--seeds={seeds}",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "--seeds" in one_line(err)
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    code, _, err = cli("run", "--methods", "faae", "--protocol", "smoke", "--out", str(f))
    assert code == 2 and "is a file, not a directory" in one_line(err) and f.read_text() == "mine"


def test_variants_and_claims_files_that_are_not_text_or_not_files(out, tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[faae-caf\xe9]\nbase = "faae"\n')
    for path, expect in ((latin, "is not UTF-8 text"), (tmp_path, "is a directory"), (tmp_path / "no.toml", "not exist")):
        code, _, err = cli("run", "--methods", "faae", "--variants", str(path), "--protocol", "smoke",
                           "--out", str(tmp_path / "o"))
        assert code == 2 and f"variants file {path} " in one_line(err) and expect in err
        code, _, err = cli("report", "--out", str(out), "--claims", str(path), "--no-figures")
        assert code == 2 and f"claims file {path} " in one_line(err) and expect in err
    assert not (tmp_path / "o").exists()


def test_a_2000_deep_variant_chain_resolves(tmp_path):
    from bench.runs.resolve import load_variants

    lines = ['[v0]\nbase = "faae"\n[v0.set]\n"loss.rec_weight" = 3\n']
    lines += [f'[v{i}]\nbase = "v{i - 1}"\n' for i in range(1, 2000)]
    lines.append('[v1999.set]\n"train.max_steps" = 4\n')
    path = tmp_path / "chain.toml"
    path.write_text("".join(lines))
    v = load_variants(path)["v1999"]
    assert v.base == "faae" and v.overrides == {"loss": {"rec_weight": "3"}, "train": {"max_steps": "4"}}
    path.write_text("".join(lines).replace('base = "faae"', 'base = "v1999"'))  # and as a cycle
    code, _, err = cli("run", "--methods", "v5", "--variants", str(path), "--protocol", "smoke",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "variants form a cycle: v0 -> v1999 -> v1998 -> ... -> v2 -> v1 -> v0" in one_line(err)


@pytest.mark.parametrize("state", ['{"version": 1}', "[]", '{"version": 1, "runs": 3}', "{"])
def test_a_sweep_state_of_another_shape_is_named(tmp_path, state):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "state.json").write_text(state)
    code, _, err = cli("sweep", "--status", "--out", str(tmp_path))
    assert code == 2 and "is not a sweep state file" in one_line(err)


@pytest.mark.parametrize("entry,expect", [
    ('better = "faae"\nthan = "ali"\nkeys = ["recon_msee"]', "unknown metric key(s) recon_msee; valid: "),
    ('better = "faae"\nthan = "nosuch[loss.x=1]"\nkeys = ["recon_mse"]', "'nosuch' (of 'nosuch[loss.x=1]') is not"),
    ('better = "faae"\nthan = "faae"\nkeys = ["recon_mse"]', "better and than are both 'faae'"),
    ('better = "../x"\nthan = "ali"\nkeys = ["recon_mse"]', "better: String should match pattern"),
    ('better = "faae"\nthan = "ali"\nkeys = "recon_mse"', "keys: Input should be a valid list"),
])
def test_claims_naming_what_does_not_exist_are_errors(out, entry, expect):
    path = out / "claims.toml"
    path.write_text(f'[mine]\ntext = "x"\nsource = "y"\n{entry}\n')
    code, _, err = cli("report", "--out", str(out), "--claims", str(path), "--no-figures")
    assert code == 2 and expect in one_line(err)


def test_claims_know_the_labels_they_are_checked_on(tmp_path):
    from bench.core.config import ConfigError
    from reports.claims import load_claims

    path = tmp_path / "claims.toml"
    path.write_text('[mine]\ntext = "x"\nsource = "y"\nbetter = "faae-lowre"\nthan = "ali"\nkeys = ["lpips"]\n')
    assert load_claims(path)[0].better == "faae-lowre"  # a variant name: known only to the report
    assert load_claims(path, labels=["faae-lowre", "ali"])[0].than == "ali"
    with pytest.raises(ConfigError, match="no method or variant 'faae-lowre'; valid: "):
        load_claims(path, labels=["faae"])


def test_baseline_of_infinite_values_is_strict_json(out, tmp_path):
    from bench.compare.baseline import load_baseline

    path = tmp_path / "b.json"
    code, _, err = cli("baseline", "save", "inf", "method=faae", "--file", str(path), "--out", str(out))
    assert code == 0, err

    def refuse(token):
        raise AssertionError(f"not strict JSON: {token}")

    doc = json.loads(path.read_text(), parse_constant=refuse)
    assert doc["runs"][0]["metrics"]["recon_psnr"]["value"] == "inf"
    _, (record,) = load_baseline(path)
    assert record.values["recon_psnr"].value == math.inf and record.values["recon_ssim"].value is None


# --- odd file types where the suite keeps its files --------------------------------------------------------------------
def test_odd_files_are_refused_by_the_layer_that_owns_them(tmp_path):
    from bench.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from bench.core.lease import acquire
    from bench.core.store import StoreError

    d = tmp_path / "d"
    d.mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for path in (d, link):
        with pytest.raises(OddFileError, match="not a lease file"):
            acquire(path)
        with pytest.raises(CheckpointError, match="is a (directory|symbolic link), not a checkpoint file"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match="is a (directory|symbolic link), not a checkpoint file"):
            save_checkpoint({"x": 1}, path)
    assert d.is_dir() and link.is_symlink()
    with pytest.raises(StoreError, match="is a directory, not a results store"):
        Store(d)


@pytest.mark.parametrize("name,kind", [("lease.json", "dir"), ("last.pt", "dir"), ("result.json", "dir"),
                                       ("lease.json", "link"), ("last.pt", "link")])
def test_a_run_with_an_odd_file_fails_in_one_line(tmp_path, shared_cache, name, kind):
    """A directory where lease.json should be gave IsADirectoryError / FileExistsError tracebacks."""
    out = tmp_path / "out"
    run_id = resolve_config("faae", "mnist5k", "smoke", 0, device=torch.device("cpu")).run_id()
    odd = out / "runs" / run_id / name
    odd.parent.mkdir(parents=True)
    odd.mkdir() if kind == "dir" else odd.symlink_to(tmp_path / "elsewhere")
    code, printed, err = cli("run", "--methods", "faae", "--protocol", "smoke", "--device", "cpu", "--out", str(out),
                             "--no-progress", "--no-report", "--metrics", "mse")
    assert code == 1 and "Traceback" not in err, err
    what = {"lease.json": "a lease file", "last.pt": "a checkpoint file", "result.json": "a result file"}[name]
    text = " ".join(printed.split())  # the message is wrapped to 100 columns
    assert f"{run_id}: failed:" in text and f"is a {'directory' if kind == 'dir' else 'symbolic link'}, not {what}" \
        in text, printed
    assert odd.is_dir() or odd.is_symlink()


def test_results_db_as_a_directory_is_one_line(tmp_path):
    (tmp_path / "results.db").mkdir()
    code, _, err = cli("run", "--methods", "faae", "--protocol", "smoke", "--device", "cpu", "--out", str(tmp_path),
                       "--no-progress", "--no-report", "--metrics", "mse")
    assert code == 2 and "is a directory, not a results store" in one_line(err)


# --- Hypothesis: hostile inputs, generated -------------------------------------------------------------------------------
#: a bounded number of examples in the default suite; `soak` (CI's second step) runs SOAK times as many
FAST, SOAK = 25, 40
HOSTILE_NAMES = ["../../../../ESCAPE", "a/b", "", ".", "..", ".hidden", "x" * 300, "inf", "nan", "[[[", "{not json",
                 "faae\n", "a\x00b", "caf\udce9", "\ud800", "null", "running", "done", "12345"]
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([2**63, 2**63 - 1, 2**32, -1, 0, 10**30]),
    st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324]),
    st.text(max_size=30), st.sampled_from(HOSTILE_NAMES),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _mutate(doc: dict, other: dict, data: st.DataObject) -> str | dict:
    """One hostile change to a valid result file (or a whole hostile file)."""
    kind = data.draw(st.sampled_from(["run field", "metric field", "drop", "add", "duplicate", "other run",
                                      "whole", "nested", "raw", "valid edit", "json column"]), label="kind")
    event(kind)  # --hypothesis-show-statistics: how often each kind was drawn
    if kind == "run field":
        doc["run"][data.draw(st.sampled_from(RUN_COLUMNS))] = data.draw(json_values)
    elif kind == "metric field" and doc["metrics"]:
        row = data.draw(st.sampled_from(doc["metrics"]))
        row[data.draw(st.sampled_from(sorted(row)))] = data.draw(json_values)
    elif kind == "drop":
        part = data.draw(st.sampled_from(["doc", "run"]))
        target = doc if part == "doc" else doc["run"]
        target.pop(data.draw(st.sampled_from(sorted(target))))
    elif kind == "add":
        target = doc if data.draw(st.booleans()) else doc["run"]
        target[data.draw(st.text(max_size=10))] = data.draw(json_values)
    elif kind == "duplicate" and doc["metrics"]:
        doc["metrics"].append(dict(doc["metrics"][0]))
    elif kind == "other run":  # another run's file, whole or in part
        if data.draw(st.booleans()):
            return other
        doc["run"]["run_id"] = other["run"]["run_id"]
    elif kind == "whole":
        return data.draw(json_values)
    elif kind == "nested":
        depth = data.draw(st.integers(min_value=1, max_value=5000))
        return data.draw(st.sampled_from(["[", "{\"a\":", "[{\"b\":"])) * depth
    elif kind == "raw":
        return data.draw(st.text(max_size=200))
    elif kind == "valid edit":  # a change the schema allows: the store takes it, for this run only
        doc["run"]["message"] = data.draw(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                                  max_size=40))
        doc["run"]["updated"] += data.draw(st.floats(min_value=0, max_value=100))
    elif kind == "json column":
        row = doc["run"] if data.draw(st.booleans()) or not doc["metrics"] else doc["metrics"][0]
        column = data.draw(st.sampled_from([c for c in row if c.endswith("_json")]))
        row[column] = json.dumps(data.draw(json_values))
    return doc


def check_collect_property(template: Path, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = copy_of(template, Path(tmp) / "out")
        faae, aae = ids(out)
        before = snapshot(out / "results.db")
        faae_before = snapshot(out / "results.db", faae)
        hostile = _mutate(doc_of(out, aae), doc_of(out, faae), data)
        path = out / "runs" / aae / RESULT
        # a hostile string is written as it is, lone surrogates as the invalid UTF-8 they encode to
        path.write_text(hostile if isinstance(hostile, str) else json.dumps(hostile), errors="surrogatepass")
        code, printed, err = collect(out)
        event(f"collect exit {code}")
        assert code in (0, 1) and "Traceback" not in err, err
        assert snapshot(out / "results.db", faae) == faae_before  # never another run's rows
        if code == 1:
            assert one_line(err).startswith(f"skipped {path}: ")
            assert snapshot(out / "results.db") == before
            with pytest.raises(ResultFileError):
                read_result(path)
        else:
            assert err == "" and read_result(path)["run"]["run_id"] == aae
        after = snapshot(out / "results.db")
        assert collect(out)[0] == code and snapshot(out / "results.db") == after  # rerunning changes nothing


def _settings(n: int):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@_settings(FAST)
@given(data=st.data())
def test_hostile_result_files(template, data):
    check_collect_property(template, data)


@pytest.mark.soak
@_settings(FAST * SOAK)
@given(data=st.data())
def test_hostile_result_files_soak(template, data):
    check_collect_property(template, data)


# --- variants, claims and --set values: exit 0 (the configs resolve) or 2 with one line ------------------------------
class Reached(Exception):
    """Raised by the stand-in for the engine: every input was accepted and the configs resolved."""


@pytest.fixture
def no_engine(monkeypatch):
    import bench.runs.execute

    def execute(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(bench.runs.execute, "execute", execute)


def toml_key(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string, control characters escaped as \\u00XX


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return toml_key(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return '""'  # None: TOML has no null


#: config keys that exist (most draws) and a few that do not
SET_KEYS = ["loss.rec_weight", "train.max_steps", "train.batch_size", "model.prior", "model.latent_dim", "optim.lr_g",
            "train.precision", "data.resolution", "eval.n_images", "method.steps", "loss.nope"]
toml_values = st.recursive(st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
                                     st.text(max_size=20), st.sampled_from(HOSTILE_NAMES[:13])),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=2), max_leaves=5)
#: values a config key may well take (so that many generated files resolve), or anything
plausible = st.one_of(st.integers(1, 64), st.floats(0, 10), st.sampled_from(["sphere", "gaussian", "fp32", "bf16", "32"]),
                      st.sampled_from([0, 32, 64, 2**63 - 1, -1, math.inf, math.nan, "nan", "1e400", "99999999999999999999"]),
                      toml_values)
plain_names = st.sampled_from(["v1", "v2", "v3"])
variant_names = st.one_of(plain_names, plain_names, st.sampled_from(["faae", "x y", "a\nb", "../x", "", "-x"]),
                          st.text(max_size=8))


@st.composite
def some_names(draw) -> list[str]:
    """One to three table names: plain ones, and one time in five a hostile one among them."""
    names = draw(st.lists(plain_names, min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 4)) == 0:
        names[draw(st.integers(0, len(names) - 1))] = draw(variant_names)
    return list(dict.fromkeys(names))


def maybe(draw, value, hostile, odds: int = 4):
    """`value` most of the time, a draw of `hostile` one time in `odds`."""
    return draw(hostile) if draw(st.integers(1, odds)) == 1 else value


#: values each config key takes without error (a valid file) ...
VALID = {"loss.rec_weight": st.floats(0, 10), "train.max_steps": st.integers(1, 64), "train.batch_size": st.integers(2, 64),
         "model.prior": st.sampled_from(["sphere", "gaussian", "uniform"]), "model.latent_dim": st.integers(1, 64),
         "optim.lr_g": st.floats(1e-6, 1), "train.precision": st.sampled_from(["fp32", "bf16"]),
         "data.resolution": st.sampled_from([0, 32, 64]), "eval.n_images": st.integers(0, 64)}


@st.composite
def valid_sets(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(VALID)), max_size=3, unique=True))
    return {k: draw(VALID[k]) for k in keys}


@st.composite
def variants_specs(draw) -> tuple[str, str]:
    """A variants file and the --methods value naming some of it: half of them valid (the configs resolve), the
    others with hostile parts (names, bases, keys, values, types, TOML itself)."""
    if not draw(st.booleans()):  # valid: a chain of plain variants of registered methods
        parts, names = [], draw(st.lists(plain_names, min_size=1, max_size=3, unique=True))
        for i, name in enumerate(names):
            base = draw(st.sampled_from(["faae", "aae", "bigan", *names[:i]]))
            sets = draw(valid_sets())
            parts.append(f"[{name}]\nbase = {toml_key(base)}\n"
                         + (f"[{name}.set]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in sets.items())
                            if sets else ""))
        return "".join(parts), ",".join(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200)), draw(variant_names)
    parts, names = [], draw(some_names())
    for name in names:
        table = {"base": maybe(draw, draw(st.sampled_from(["faae", "aae", "bigan", *names])),
                               st.sampled_from(["nosuch"]) | toml_values, odds=6)}
        if draw(st.integers(0, 7)) == 0:
            table.pop("base")
        if draw(st.integers(0, 3)) == 0:
            table["description"] = maybe(draw, "d", toml_values)
        if draw(st.integers(0, 11)) == 0:
            table[draw(st.text(max_size=6))] = draw(toml_values)
        body = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items())
        sets = draw(st.dictionaries(st.one_of(*[st.sampled_from(SET_KEYS)] * 7, st.text(max_size=12)), plausible,
                                    max_size=2))
        if draw(st.integers(0, 9)) == 0:
            body += f"set = {toml_value(draw(toml_values))}\n"
        elif sets:
            body += f"[{toml_key(name)}.set]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in sets.items())
        parts.append(f"[{toml_key(name)}]\n{body}")
    methods = ",".join(draw(st.lists(st.sampled_from(names) | variant_names, min_size=1, max_size=2)))
    return "".join(parts), methods


set_items = st.one_of(valid_sets().map(lambda d: [f"{k}={v}" for k, v in d.items()]),
                      st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS),
                                                   plausible.map(lambda v: v if isinstance(v, str) else json.dumps(v))),
                                         st.text(max_size=20)), max_size=2))


def check_run_inputs(tmp: Path, variants: str | None, methods: str, sets: list[str]) -> None:
    # VALUE joined to its option: a value starting with "-" would be argparse's to refuse (as an option)
    argv = ["run", f"--methods={methods or 'v1'}", "--protocol", "smoke", "--device", "cpu", "--out", str(tmp / "o"),
            "--no-progress", "--no-report"]
    if variants is not None:
        (tmp / "v.toml").write_text(variants, errors="surrogatepass")
        argv += ["--variants", str(tmp / "v.toml")]
    argv += [f"--set={item}" for item in sets]
    try:
        code, _, err = cli(*argv)
    except Reached:
        event("accepted")
        return
    event("refused")
    assert code == 2, err
    one_line(err)


@_settings(2 * FAST)
@given(spec=variants_specs(), sets=set_items)
def test_hostile_variants_and_set_values(no_engine, tmp_path, spec, sets):
    check_run_inputs(tmp_path, *spec, sets)


@pytest.mark.soak
@_settings(2 * FAST * SOAK)
@given(spec=variants_specs(), sets=set_items)
def test_hostile_variants_and_set_values_soak(no_engine, tmp_path, spec, sets):
    check_run_inputs(tmp_path, *spec, sets)


@st.composite
def claims_files(draw) -> str:
    if not draw(st.booleans()):  # valid
        return "".join(f'[{name}]\ntext = "t"\nsource = "s"\nbetter = {toml_key(better)}\nthan = "aae"\n'
                       f"keys = {toml_value(keys)}\n"
                       for name, better, keys in draw(st.lists(st.tuples(
                           plain_names, st.sampled_from(["faae", "bigan", "faae[loss.rec_weight=0]"]),
                           st.lists(st.sampled_from(["recon_mse", "lpips", "fid_samples", "reencode_ratio"]),
                                    min_size=1, max_size=3)), max_size=3, unique_by=lambda t: t[0])))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    parts = []
    for name in draw(some_names()):
        table = {"text": "t", "source": "s", "better": "faae", "than": "aae", "keys": ["recon_mse"]}
        for field in draw(st.lists(st.sampled_from([*table, "colour"]), max_size=1)):
            table[field] = draw(st.sampled_from(["faae", "ali", "v1", "faae[loss.x=1]", "nosuch[x=1]", "recon_mse",
                                                 "recon_msee", ["lpips", "cycle_mse"], ["lpips", "nope"], []])
                                | toml_values)
        if draw(st.integers(0, 4)) == 0:
            table.pop(draw(st.sampled_from(sorted(table))))
        parts.append(f"[{toml_key(name)}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()))
    return "".join(parts)


def check_claims(tmp: Path, text: str, labels: list[str] | None) -> None:
    from bench.core.config import ConfigError
    from reports.claims import load_claims

    path = tmp / "claims.toml"
    path.write_text(text, errors="surrogatepass")
    try:
        claims = load_claims(path, labels)
    except ConfigError as e:
        event("refused")
        one_line(str(e))
        return
    event(f"{len(claims)} claim(s) accepted")
    for c in claims:
        assert c.keys and c.better != c.than and all(isinstance(k, str) for k in c.keys)


@_settings(FAST)
@given(text=claims_files(), labels=st.none() | st.lists(st.sampled_from(["faae", "aae", "v1"]), max_size=3))
def test_hostile_claims_files(tmp_path, text, labels):
    check_claims(tmp_path, text, labels)


@pytest.mark.soak
@_settings(FAST * SOAK)
@given(text=claims_files(), labels=st.none() | st.lists(st.sampled_from(["faae", "aae", "v1"]), max_size=3))
def test_hostile_claims_files_soak(tmp_path, text, labels):
    check_claims(tmp_path, text, labels)

