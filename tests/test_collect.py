"""Result files and `bench collect`: a run directory's result.json holds its rows exactly as stored, and
collecting them into another store gives the same rows, twice without change; damaged files are named."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core.config import parse_overrides
from bench.core.result_file import RESULT, read_result, write_result
from bench.core.store import Store
from bench.resolve import resolve_config
from bench.runner import execute
from metrics import MetricValue
from reports.results import load_results

pytestmark = pytest.mark.slow  # one smoke run trained (a few seconds)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_cache) -> Path:
    """One finished smoke run of F-AAE scored with `mse`, plus a metric holding +inf and n/a values."""
    out = tmp_path_factory.mktemp("collect") / "out"
    cfg = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides([]))
    (r,) = execute([cfg], out, None, torch.device("cpu"), metrics=["mse"], progress=False)
    assert r.status == "done", r.message
    store = Store(out / "results.db")
    store.put_metrics(r.run_id, "extra", [MetricValue("psnr_same", math.inf, {"why": "identical images"}),
                                          MetricValue("na_key", None, {"reason": "method lacks it"})])
    write_result(store, r.run_id, r.run_dir)
    return out


def everything(store_path: Path) -> tuple[list[dict], list[dict]]:
    store = Store(store_path, readonly=True)
    return store.runs(), store.metric_rows()


def test_result_file_is_the_store_in_strict_json(trained):
    (path,) = (trained / "runs").glob(f"*/{RESULT}")

    def reject(word):
        raise AssertionError(f"non-strict JSON constant {word}")

    json.loads(path.read_text(), parse_constant=reject)
    record = read_result(path)
    assert record == Store(trained / "results.db").run_record(record["run"]["run_id"])
    assert record["run"]["status"] == "done"
    values = {m["key"]: m["value"] for m in record["metrics"]}
    assert values["psnr_same"] == math.inf and values["na_key"] is None and "recon_mse" in values


def test_collect_into_a_fresh_store_twice(trained, tmp_path, capsys):
    target = tmp_path / "collected.db"
    assert main(["collect", "--out", str(trained), "--store", str(target)]) == 0
    assert "1 new, 0 updated, 0 unchanged" in capsys.readouterr().out
    original = everything(trained / "results.db")
    first = everything(target)
    assert first == original and len(first[1]) >= 3
    assert main(["collect", "--out", str(trained), "--store", str(target)]) == 0
    assert "0 new, 0 updated, 1 unchanged" in capsys.readouterr().out
    assert everything(target) == first  # created and updated timestamps too
    # collecting into the run's own store (its default) changes nothing either
    assert main(["collect", "--out", str(trained)]) == 0
    assert everything(trained / "results.db") == original
    # reports read the collected store
    results = load_results(target)
    assert [r.run_id for r in results.runs] == [original[0][0]["run_id"]]


def test_collect_updates_a_run_and_names_a_damaged_file(trained, tmp_path, capsys):
    # a worker's run directory copied elsewhere: only its result file travels
    out = tmp_path / "gathered"
    (src,) = (trained / "runs").glob(f"*/{RESULT}")
    run_dir = out / "runs" / src.parent.name
    run_dir.mkdir(parents=True)
    shutil.copy(src, run_dir / RESULT)
    bad = out / "runs" / "broken-run" / RESULT
    bad.parent.mkdir()
    bad.write_text(src.read_text()[:200])  # cut short, as by a full disk
    target = tmp_path / "central.db"
    assert main(["collect", "--out", str(out), "--store", str(target)]) == 1
    captured = capsys.readouterr()
    assert str(bad) in captured.err and "1 new" in captured.out and "1 damaged" in captured.out
    (run,) = Store(target).runs()
    assert run["run_dir"] == str(run_dir.resolve())  # where the run directory is now
    # a newer result of the same run (re-evaluated by its worker) replaces the stored rows
    record = read_result(run_dir / RESULT)
    record["run"]["updated"] += 1.0
    record["metrics"][0]["value"] = 0.5
    scratch = Store(tmp_path / "worker.db")
    scratch.import_record(record)
    write_result(scratch, record["run"]["run_id"], run_dir)
    bad.unlink()
    assert main(["collect", "--out", str(out), "--store", str(target)]) == 0
    assert "0 new, 1 updated" in capsys.readouterr().out
    assert Store(target).metric_rows()[0]["value"] == 0.5


def test_collect_without_result_files_is_a_usage_error(tmp_path, capsys):
    assert main(["collect", "--out", str(tmp_path)]) == 2
    assert "no result files" in capsys.readouterr().err
