"""Result files and `bench collect`: a run directory's result.json holds its rows exactly as stored, and
collecting them into another store gives the same rows, twice without change; refused files are named.
The same into a real PostgreSQL server, which two writing processes share without losing anything."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core.config import parse_overrides
from bench.core.result_file import RESULT, read_result, write_result
from bench.core.store import Store, StoreError
from bench.runs.execute import execute
from bench.runs.resolve import resolve_config
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
    assert str(bad) in captured.err and "1 new" in captured.out and "1 refused" in captured.out
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


# --- PostgreSQL: the same store on a real server ---------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster listening on a private socket in a temporary directory; yields a function
    giving the URL of a new empty database. Skips only when no PostgreSQL server is installed."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (/usr/lib/postgresql/*/bin/initdb; Debian package postgresql)")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install -e '.[postgres]'")
    root = Path(tempfile.mkdtemp(prefix="aegan-pg-"))
    # the server refuses to run as root: as root, run it as the postgres user in a directory it owns
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:  # a free port number: it names the socket file (no TCP: listen_addresses='')
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = root / "data", root / "server.log"

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_user, str(bindir / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8")
    pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-o",
       f"-p {port} -k {root} -c listen_addresses='' -c fsync=off", "start")
    base = f"postgresql://postgres@/{{}}?host={root}&port={port}"
    import psycopg

    def new_database(name: str) -> str:
        with psycopg.connect(base.format("postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return base.format(name)

    try:
        yield new_database
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_collect_into_postgresql_gives_the_rows_of_sqlite(trained, tmp_path, postgres, capsys):
    url = postgres("collect")
    lite = tmp_path / "collected.db"
    assert main(["collect", "--out", str(trained), "--store", str(lite)]) == 0
    assert main(["collect", "--out", str(trained), "--store", url]) == 0
    assert "1 new" in capsys.readouterr().out
    rows = everything(url)
    assert rows == everything(lite) and rows[1][0]["value"] is None  # n/a stays NULL
    assert {m["key"]: m["value"] for m in rows[1]}["psnr_same"] == math.inf
    assert main(["collect", "--out", str(trained), "--store", url]) == 0
    assert "1 unchanged" in capsys.readouterr().out and everything(url) == rows
    assert [r.run_id for r in load_results(url).runs] == [rows[0][0]["run_id"]]


#: a writer process: runs, their metrics, and a read-modify-write (add_tags) of one row both writers share;
#: only the store is imported (no torch), so the two start fast and their writes overlap
WRITER = """
import sys
from types import SimpleNamespace
from bench.core.store import Store
store, worker = Store(sys.argv[1]), sys.argv[2]
for i in range(20):
    rid = f"w{worker}-{i}"
    store.upsert_run(rid, method="m", variant="m", dataset="d", protocol="p", seed=i, config_json={},
                     config_hash="h", code_version="c", packages_json={}, device="cpu", dtype="fp32",
                     status="running", run_dir="x")
    store.put_metrics(rid, "mse", [SimpleNamespace(key="recon_mse", value=float(i), provenance={"n_images": 1})])
    store.add_tags("shared", [rid])
"""


def test_two_processes_writing_to_postgresql_lose_nothing(postgres):
    url = postgres("concurrent")
    store = Store(url)
    store.upsert_run("shared", method="m", variant="m", dataset="d", protocol="p", seed=0, config_json={},
                     config_hash="h", code_version="c", packages_json={}, device="cpu", dtype="fp32",
                     status="done", run_dir="x")
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w)], cwd=root, stderr=subprocess.PIPE, text=True)
             for w in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(store.runs()) == 41 and len(store.metric_rows()) == 40
    assert len(Store.split_tags(store.get_run("shared")["tags"])) == 40  # no tag lost to the other writer


def test_postgresql_store_errors_are_one_line(postgres, tmp_path, capsys):
    url = postgres("errors")
    gone = url.replace("/errors?", "/no_such_db?")
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / RESULT).write_text("{}")
    assert main(["collect", "--out", str(tmp_path), "--store", gone]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_db" in err and "Traceback" not in err
    with pytest.raises(StoreError, match="not an aegan-bench results store"):
        Store(url, readonly=True)
