"""Fault injection (issue 14): crafted and damaged checkpoints, two `bench run` processes on one store, a full
disk, temporary files left by killed processes, SIGKILL at random points with racing processes.

The rows of the issue's table these tests reproduce: 1 (a crafted checkpoint runs code), 2 (two identical
commands on one --out), 4 (a truncated or garbage checkpoint), 9 (a full disk while checkpointing; temporary
files left for good). The soak (`-m soak`) repeats the kill-and-race loop longer and prints what it exercised.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.core.checkpoint import FORMAT_KEY, CheckpointError, load_checkpoint, save_checkpoint
from bench.core.config import parse_overrides
from bench.core.layout import CHECKPOINT, LEASE
from bench.core.lease import history_path
from bench.core.store import Store
from bench.core.tempfiles import HOST
from bench.runs.execute import execute
from bench.runs.resolve import resolve_config

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
SMOKE = ["--protocol", "smoke", "--no-progress", "--metrics", "mse"]
#: a finished run is all most tests need: two steps train one
SHORT = ["--set", "train.max_steps=2"]
MSE_KEYS = {"recon_mse", "recon_mse_random_pair"}
TEMP = re.compile(r"\.tmp|\.stale")


def smoke_cfg(seed: int, **sets):
    return resolve_config("faae", "mnist5k", "smoke", seed, parse_overrides([f"{k}={v}" for k, v in sets.items()]))


def copy_out(src: Path, dst: Path) -> Path:
    """A copy of an output directory whose store points at the copy's run directories."""
    shutil.copytree(src, dst)
    with sqlite3.connect(dst / "results.db") as con:
        con.execute("UPDATE runs SET run_dir = replace(run_dir, ?, ?)", (str(src.resolve()), str(dst.resolve())))
    return dst


def statuses(out: Path) -> dict[str, str]:
    """run id -> status in the store (none while the first process is still creating it)."""
    if not (out / "results.db").exists():
        return {}
    try:
        with sqlite3.connect(out / "results.db", timeout=30) as con:
            return dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP.search(p.name)]


def bench_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "AEGAN_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def reference_weights(cfg, out: Path) -> dict[str, torch.Tensor]:
    """The weights of an uninterrupted run, trained here with one thread as the `bench run` processes of
    bench_env are (CPU results depend on the thread count)."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # else the runner takes every core (bench.runs.execute.use_all_cores)
    try:
        [ref] = execute([cfg], out, None, CPU, metrics=["mse"], progress=False)
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return load_checkpoint(ref.run_dir / CHECKPOINT)["model"]


RUN_BOTH = ["run", "--methods", "aae,faae", *SMOKE, *SHORT, "--no-report"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, shared_cache) -> Path:
    """Two finished smoke runs, AAE and F-AAE (two rows of a table, each drawn in the grids), scored with
    `mse`, trained in this process."""
    out = tmp_path_factory.mktemp("faults") / "out"
    assert main([*RUN_BOTH, "--out", str(out)]) == 0
    return out


# --- row 1: a crafted checkpoint runs nothing ---------------------------------------------------------------
class Payload:
    """Unpickling this runs a shell command, as a crafted last.pt would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def craft(path: Path, marker: Path, zipped: bool) -> None:
    obj = {FORMAT_KEY: 2, "model": Payload(f"touch {marker}"), "step": 1, "finished": True}
    if zipped:
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "plain-pickle"])
def test_crafted_checkpoint_runs_nothing_under_run_report_eval(two_runs, tmp_path, capsys, zipped):
    out = copy_out(two_runs, tmp_path / "out")
    (good, s1) = sorted((out / "runs").iterdir())  # aae, faae
    marker = tmp_path / "PWNED"
    craft(s1 / CHECKPOINT, marker, zipped)
    # the file is live: the full unpickler (what load_checkpoint used before) runs the command
    probe = tmp_path / "probe"
    craft(tmp_path / "probe.pt", probe, zipped)
    torch.load(tmp_path / "probe.pt", weights_only=False) if zipped else pickle.loads((tmp_path / "probe.pt").read_bytes())
    assert probe.exists()

    # report: draws AAE, lists F-AAE as damaged
    assert main(["report", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert not marker.exists()
    md = (out / "report" / "report.md").read_text()
    assert "## Runs with damaged files" in md and f"{s1.name}: checkpoint {s1 / CHECKPOINT} refers to posix.system" in md
    assert f"damaged run {s1.name}" in printed.out and "Traceback" not in printed.err
    # the grids are drawn with the other run
    assert any((out / "report" / "figures").glob("*-recon.png")) and "Left out: faae: checkpoint" in md

    # eval: evaluates AAE, skips F-AAE with one line
    assert main(["eval", "--out", str(out), "--metrics", "mse"]) == 1
    printed = capsys.readouterr()
    assert not marker.exists()
    [line] = [ln for ln in printed.out.splitlines() if s1.name in ln]
    assert line.startswith(f"skipped {s1.name}: checkpoint {s1 / CHECKPOINT} refers to posix.system")

    # run: AAE is done, F-AAE fails with one line saying what to do; the store says so
    assert main([*RUN_BOTH, "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert not marker.exists()
    [line] = [ln for ln in printed.out.splitlines() if ln.startswith(s1.name)]
    assert "failed: checkpoint" in line and "--overwrite" in line and "Traceback" not in printed.err
    assert statuses(out) == {good.name: "done", s1.name: "failed"}


# --- row 4: damaged checkpoints are named, contained, and the advice works ----------------------------------
def old_format(ckpt: dict) -> dict:
    """A checkpoint as the runner wrote it before format 2: numpy's and python's RNG state objects."""
    old = {k: v for k, v in ckpt.items() if k != FORMAT_KEY}
    old["rng"] = {**ckpt["rng"], "numpy": np.random.get_state(), "python": random.getstate()}
    return old


DAMAGE = {
    "truncated": (lambda data, ck: data[: len(data) // 2], "is damaged or not a checkpoint (RuntimeError: "),
    "garbage": (lambda data, ck: os.urandom(4096), "is damaged or not a checkpoint"),
    "empty": (lambda data, ck: b"", "is damaged or not a checkpoint (EOFError)"),
    "format-1": (lambda data, ck: old_format(ck), "was written by an older aegan-bench (checkpoint format 1"),
    "format-3": (lambda data, ck: {**ck, FORMAT_KEY: 3}, "has checkpoint format 3; this aegan-bench reads format 2"),
    "not-a-dict": (lambda data, ck: [torch.zeros(2)], "is not an aegan-bench checkpoint (it holds a list)"),
}


def damage(path: Path, kind: str) -> str:
    make, expected = DAMAGE[kind]
    made = make(path.read_bytes(), load_checkpoint(path))
    if isinstance(made, bytes):
        path.write_bytes(made)
    else:
        torch.save(made, path)
    return expected


def test_each_kind_of_damage_is_one_line_naming_the_file(two_runs, tmp_path, capsys):
    out = copy_out(two_runs, tmp_path / "out")
    (_, s1) = sorted((out / "runs").iterdir())
    pristine = (s1 / CHECKPOINT).read_bytes()
    for kind in DAMAGE:
        (s1 / CHECKPOINT).write_bytes(pristine)
        expected = damage(s1 / CHECKPOINT, kind)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(s1 / CHECKPOINT)
        msg = str(e.value)
        assert msg.startswith(f"checkpoint {s1 / CHECKPOINT} {expected}"), (kind, msg)
        assert "\n" not in msg and msg.endswith("remove that file or rerun `bench run` with --overwrite to train "
                                                "the run again"), (kind, msg)
        assert "weights_only" not in msg  # never torch's advice to load it unsafely
        assert main(["eval", "--out", str(out), "--metrics", "mse"]) == 1
        assert f"skipped {s1.name}: {msg}" in capsys.readouterr().out.splitlines(), kind


def test_a_truncated_checkpoint_fails_its_run_only_and_report_draws_the_rest(two_runs, tmp_path, capsys):
    out = copy_out(two_runs, tmp_path / "out")
    (good, s1) = sorted((out / "runs").iterdir())
    damage(s1 / CHECKPOINT, "truncated")
    assert main(["report", "--out", str(out)]) == 0
    assert f"damaged run {s1.name}: checkpoint {s1 / CHECKPOINT} is damaged" in capsys.readouterr().out
    md = (out / "report" / "report.md").read_text()
    assert "Runs with damaged files" in md and "Left out: faae: checkpoint" in md
    assert any((out / "report" / "figures").glob("*-recon.png"))  # the grids drew the other run
    assert main([*RUN_BOTH, "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert f"{s1.name}: failed: checkpoint {s1 / CHECKPOINT} is damaged" in printed.out
    assert "Traceback" not in printed.err and statuses(out) == {good.name: "done", s1.name: "failed"}
    assert "is damaged" in Store(out / "results.db").get_run(s1.name)["message"]
    # the advice works: --overwrite trains the run again
    assert main(["run", "--methods", "faae", *SMOKE, *SHORT, "--out", str(out), "--no-report", "--overwrite"]) == 0
    assert set(statuses(out).values()) == {"done"} and load_checkpoint(s1 / CHECKPOINT)["finished"]


def test_checkpoints_hold_tensors_and_plain_data_and_resume_the_rngs_exactly(tmp_path, shared_cache):
    """Every trainable method's training state passes the weights-only unpickler, and restoring it restores
    the torch, numpy and python RNGs to the draw."""
    from bench.core.data import load_dataset
    from bench.runs.state import TrainState, make_state, rng_state
    from methods import METHODS
    from methods.trained import build_method

    data = load_dataset("mnist5k", None, smoke_cfg(0).data)
    for name in sorted(METHODS):
        if METHODS.get(name).base_method is not None:
            continue
        cfg = resolve_config(name, "mnist5k", "smoke")
        state = make_state(cfg, build_method(cfg, data))
        random.random(), np.random.standard_normal(), torch.rand(1)  # noqa: B018  (advance every RNG)
        save_checkpoint(state.state_dict(cfg), tmp_path / f"{name}.pt")
        draws = (random.random(), float(np.random.standard_normal()), float(torch.rand(1)))
        ckpt = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        TrainState.load(state, load_checkpoint(tmp_path / f"{name}.pt"))
        assert (random.random(), float(np.random.standard_normal()), float(torch.rand(1))) == draws, name
        assert ckpt[FORMAT_KEY] == 2 and set(rng_state()) == set(ckpt["rng"])


# --- row 2: two processes, one store -----------------------------------------------------------------------
def test_temporary_names_do_not_collide_between_writers(tmp_path):
    """The report's writer, from many threads at once: the fixed ".NAME.tmp" made one replace the other's
    temporary away (FileNotFoundError)."""
    from reports.render import _write

    path, errors = tmp_path / "report.md", []

    def write(i: int) -> None:
        try:
            for j in range(100):
                _write(path, f"writer {i} version {j}\n" * 50)
        except Exception as e:  # noqa: BLE001  (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and path.read_text().startswith("writer ") and temp_files(tmp_path) == []


def log_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def history(run_dir: Path) -> list[dict]:
    path = history_path(run_dir / LEASE)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


BARRIER = """
# loaded by `bench run --plugin`: holds each process until both are here, so that they claim runs together
import os, time
from pathlib import Path
d = Path(os.environ["BARRIER_DIR"])
(d / str(os.getpid())).touch()
deadline = time.time() + 120
while len(list(d.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.005)
"""


@pytest.mark.soak  # CI's second step: the default suite keeps to its 10-minute budget
def test_two_identical_run_commands_at_once(tmp_path):
    """Both exit 0, each run is trained exactly once, log.jsonl has one line per logged step, and one process
    said which run it left to the other."""
    out, steps = tmp_path / "out", 40
    (tmp_path / "barrier").mkdir()
    (tmp_path / "barrier_plugin.py").write_text(BARRIER)
    cmd = [sys.executable, "-m", "bench", "run", "--methods", "faae", "--seeds", "0,1", *SMOKE, "--out", str(out),
           "--plugin", str(tmp_path / "barrier_plugin.py"), "--set", f"train.max_steps={steps}",
           "train.ckpt_every_s=0", "train.batch_size=16", "train.epochs=100", "train.log_every=1"]
    env = {**bench_env(tmp_path / "cache"), "BARRIER_DIR": str(tmp_path / "barrier")}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2 and set(statuses(out).values()) == {"done"}
    for run_dir in runs:
        trained = [h for h in history(run_dir) if h.get("event") == "train"]
        assert len(trained) == 1 and trained[0]["from_step"] == 0, run_dir.name
        assert log_steps(run_dir) == list(range(1, steps + 1))
        assert not (run_dir / LEASE).exists()
    skipped = [ln for _, err in results for ln in err.splitlines() if ln.startswith("skipped ")]
    assert skipped and all("another process holds it: pid" in ln for ln in skipped)
    assert temp_files(out) == []
    with sqlite3.connect(out / "results.db") as con:
        keys = con.execute("SELECT run_id, key FROM metrics").fetchall()
    assert len(keys) == len(set(keys)) == 2 * len(MSE_KEYS)


# --- row 9: a full disk, and temporaries left behind --------------------------------------------------------
def test_orphaned_temporaries_of_dead_processes_are_removed(two_runs, tmp_path):
    out = copy_out(two_runs, tmp_path / "out")
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = p.pid
    run_dir = sorted((out / "runs").iterdir())[0]
    (out / "report" / "figures").mkdir(parents=True)
    orphans = [run_dir / f".last.pt.tmp{dead}", run_dir / f".last.pt.tmp{dead}-0123abcd@{HOST}",
               out / "report" / f".report.html.tmp{dead}-89abcdef@{HOST}",
               out / "report" / "figures" / f".x-recon.png.tmp{dead}-89abcdef@{HOST}"]
    alive = run_dir / f".last.pt.tmp{os.getpid()}-0123abcd@{HOST}"  # a writer that is still running
    for f in [*orphans, alive]:
        f.write_bytes(b"partial")
    assert main([*RUN_BOTH, "--out", str(out)]) == 0
    assert not orphans[0].exists() and not orphans[1].exists() and alive.exists()
    assert main(["report", "--out", str(out), "--no-figures"]) == 0
    assert not any(f.exists() for f in orphans) and alive.exists()


DISK_FULL = """
set -u
mount -t tmpfs -o size={size}k tmpfs "$OUT/runs" || exit 97
"$PY" -m bench run "$@"; echo "rc=$?"
ls -a "$OUT"/runs/*/
mount -o remount,size=65536k "$OUT/runs"
"$PY" -m bench run "$@"; echo "rc=$?"
cp "$OUT"/runs/*/last.pt "$KEEP/"
"""


@pytest.mark.soak  # CI's second step: the default suite keeps to its 10-minute budget
def test_a_full_disk_while_checkpointing_fails_truthfully_and_resumes(tmp_path, shared_cache):
    """A real full disk: the run directories on a small tmpfs (in a user and mount namespace) that holds one
    checkpoint but not a second. The run fails naming the file, the store says failed, no temporary stays;
    with space again the same command resumes, bit-identical to an uninterrupted run."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small file system")
    out, keep = tmp_path / "out", tmp_path / "keep"
    (out / "runs").mkdir(parents=True)
    keep.mkdir()
    sets = {"train.max_steps": 8, "train.ckpt_every_s": 0, "train.batch_size": 16, "train.epochs": 100,
            "train.sample_every": 1000}
    reference = reference_weights(smoke_cfg(0, **sets), tmp_path / "ref")
    size_k = next((tmp_path / "ref" / "runs").glob(f"*/{CHECKPOINT}")).stat().st_size * 3 // 2 // 1024
    args = ["--methods", "faae", *SMOKE, "--out", str(out), "--no-report",
            "--set", *[f"{k}={v}" for k, v in sets.items()]]
    env = {**bench_env(shared_cache), "OUT": str(out), "KEEP": str(keep), "PY": sys.executable}
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", DISK_FULL.format(size=size_k),
                        "sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode == 97 or "unshare failed" in r.stderr or "Operation not permitted" in r.stderr:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()[:200]}")
    first, second = r.stdout.split("rc=")[1:3]
    run_dir = out / "runs" / smoke_cfg(0, **sets).run_id()
    assert first.startswith("1"), r.stdout + r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if "no space left on device" in ln]
    assert line.startswith(f"{run_dir.name}: failed: no space left on device while writing {run_dir / CHECKPOINT};")
    assert "Traceback" not in r.stderr and "unexpected pos" not in r.stderr + r.stdout
    listing = first.splitlines()[1:]
    assert CHECKPOINT in listing and not [n for n in listing if TEMP.search(n)] and LEASE not in listing
    assert second.startswith("0"), r.stdout + r.stderr
    rows = Store(out / "results.db").runs()
    assert [r["status"] for r in rows] == ["done"]
    resumed = load_checkpoint(keep / CHECKPOINT)
    assert resumed["step"] == 8 and resumed["finished"]
    assert all(torch.equal(reference[k], resumed["model"][k]) for k in reference)


# --- kills at random points, with racing processes ---------------------------------------------------------
#: the phases kills aim at, in turn: training and checkpoint writes twice as often
KILL_CYCLE = ("training", "checkpoint write", "startup", "evaluation", "training", "checkpoint write", "report")


@dataclass
class Soak:
    """Two `bench run` processes at a time over one store (identical, reversed or overlapping seed lists),
    each SIGKILLed at a random point of its target phase (the next of KILL_CYCLE; a process that ends
    before the phase shows is not killed), rerun until every run is done or the rounds run out; then
    rounds without kills until both processes exit 0. Counts what it exercised."""

    out: Path
    seeds: list[int]
    steps: int
    env: dict[str, str]
    rng: random.Random
    report: bool = False
    counts: Counter = field(default_factory=Counter)

    def sets(self) -> dict[str, object]:
        return {"train.max_steps": self.steps, "train.ckpt_every_s": 0, "train.batch_size": 16, "train.epochs": 100,
                "train.log_every": 1}

    def run_id(self, seed: int) -> str:
        return smoke_cfg(seed, **self.sets()).run_id()

    def command(self, seeds: list[int]) -> list[str]:
        cmd = [sys.executable, "-m", "bench", "run", "--methods", "faae", "--seeds", ",".join(map(str, seeds)), *SMOKE,
               "--out", str(self.out), "--set", *[f"{k}={v}" for k, v in self.sets().items()]]
        return cmd if self.report else [*cmd, "--no-report"]

    def observe(self, targets: set[str], seeds: list[int]) -> set[str]:
        """What is going on, as the store and the run directories show it from outside: a checkpoint being
        written, a run training or evaluating (any process), or (for the process given `seeds`) all of its
        runs done: it is rendering the report or about to exit."""
        seen: set[str] = set()
        runs = [d for d in (self.out / "runs").glob("*") if d.is_dir()]
        for d in runs:
            with contextlib.suppress(FileNotFoundError):
                if any(n.startswith(f".{CHECKPOINT}.tmp") for n in os.listdir(d)):
                    seen.add("checkpoint write")
        if targets <= {"checkpoint write"}:  # a write lasts milliseconds: no store query in between
            return seen
        st = statuses(self.out)
        for d in runs:
            if st.get(d.name) == "running":
                # training ends with samples/final.png; evaluation follows
                seen.add("evaluation" if (d / "samples" / "final.png").exists() else "training")
        if all(st.get(self.run_id(s)) == "done" for s in seeds):
            seen.add("report")
        return seen

    def all_done(self) -> bool:
        return all(statuses(self.out).get(self.run_id(s)) == "done" for s in self.seeds)

    def round(self, kill: bool) -> bool:
        """One round of two processes; returns whether both exited 0 without a kill."""
        targets = []
        for _ in range(2):
            # the phases in turn, so that each gets its share of kills
            targets.append(KILL_CYCLE[self.counts["kill plans"] % len(KILL_CYCLE)] if kill else None)
            self.counts["kill plans"] += kill
        orders = [list(self.seeds), list(reversed(self.seeds))]
        lists = [self.rng.choice(orders), self.rng.choice([*orders, self.rng.sample(self.seeds, 2)])]
        # a process killed in its report has finished its runs: give it two, so that work remains
        lists = [self.rng.sample(self.seeds, 2) if t == "report" else seeds for t, seeds in zip(targets, lists)]
        self.counts["races on the same runs" if lists[0] == lists[1] else "races on other run lists"] += 1
        procs, plans = [], []
        for seeds, target in zip(lists, targets):
            procs.append(subprocess.Popen(self.command(seeds), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
            # startup: a random time; checkpoint write: at once; else a little into the phase
            delay = self.rng.uniform(0.5, 8.0) if target == "startup" else 0.0 if target == "checkpoint write" \
                else self.rng.uniform(0.0, 0.5)
            plans.append([target, delay, time.monotonic() if target == "startup" else None])
            time.sleep(self.rng.uniform(0, 1.0))
        clean = True
        live = set(range(len(procs)))
        while live:
            now = time.monotonic()
            for i in sorted(live):
                p, (target, delay, since) = procs[i], plans[i]
                if p.poll() is not None:
                    live.discard(i)
                    _, err = p.communicate()
                    assert p.returncode == 0, err
                    assert "Traceback" not in err, err
                    self.counts["skips"] += sum(ln.startswith("skipped ") for ln in err.splitlines())
                    continue
                if since is None and target is not None and target in self.observe({target}, lists[i]):
                    plans[i][2] = since = now
                if since is not None and now - since >= delay:
                    p.send_signal(signal.SIGKILL)
                    p.communicate()
                    live.discard(i)
                    clean = False
                    self.counts["kills"] += 1
                    self.counts[f"kills during {target}"] += 1
            time.sleep(0.002)
        self.counts["rounds"] += 1
        self.counts["processes"] += len(procs)
        return clean and self.all_done()

    def run(self, max_kill_rounds: int) -> Counter:
        while self.counts["rounds"] < max_kill_rounds and not self.all_done():
            self.round(kill=True)
        for _ in range(5):
            if self.round(kill=False):
                break
        return self.counts


def check_after_soak(soak: Soak, ref_out: Path) -> None:
    """Every run done, trained once per lease, its log one line per step in order, one row per (run, metric
    key), nothing temporary left, and the weights bit-identical to an uninterrupted run."""
    out = soak.out
    assert list(statuses(out).values()) == ["done"] * len(soak.seeds)
    with sqlite3.connect(out / "results.db") as con:
        rows = con.execute("SELECT run_id, metric, key FROM metrics").fetchall()
    assert len(rows) == len(set(rows)) == len(soak.seeds) * len(MSE_KEYS) and {m for _, m, _ in rows} == {"mse"}
    for seed in soak.seeds:
        cfg = smoke_cfg(seed, **soak.sets())
        run_dir = out / "runs" / cfg.run_id()
        assert log_steps(run_dir) == list(range(1, soak.steps + 1)), run_dir.name
        events = history(run_dir)
        trained = [e for e in events if e.get("event") == "train"]
        claims = {e["token"] for e in events if e.get("event") == "claim"}
        assert trained and all(e["token"] in claims for e in trained)
        assert max(Counter(e["token"] for e in trained).values()) == 1  # one training per lease
        assert [e["from_step"] for e in trained] == sorted(e["from_step"] for e in trained)
        soak.counts["trainings resumed after a kill"] += len(trained) - 1
        soak.counts["leases taken over"] += sum(1 for e in events if e.get("event") == "claim" and e["took_over"])
        assert not (run_dir / LEASE).exists()
        ckpt = load_checkpoint(run_dir / CHECKPOINT)
        assert ckpt["finished"] and ckpt["step"] == soak.steps
        reference = reference_weights(cfg, ref_out)
        assert all(torch.equal(reference[k], ckpt["model"][k]) for k in reference), run_dir.name
    assert temp_files(out) == [], temp_files(out)


@pytest.mark.soak
@pytest.mark.slow  # so that -m "not slow", which replaces the default -m "not soak", leaves it out too
def test_soak_kills_and_races(tmp_path, shared_cache):
    """Eight runs over one store, killed and raced until done, reports included. $AEGAN_BENCH_SOAK_SEED picks
    the kill points, $AEGAN_BENCH_SOAK_ROUNDS caps the rounds with kills."""
    seed = int(os.environ.get("AEGAN_BENCH_SOAK_SEED", "1414"))
    rounds = int(os.environ.get("AEGAN_BENCH_SOAK_ROUNDS", "10"))
    soak = Soak(tmp_path / "out", list(range(8)), 100, bench_env(shared_cache), random.Random(seed), report=True)
    soak.run(max_kill_rounds=rounds)
    check_after_soak(soak, tmp_path / "ref")
    print(f"soak (seed {seed}): {json.dumps(dict(soak.counts), sort_keys=True)}")
    assert soak.counts["kills"] >= 5 and soak.counts["leases taken over"] >= 1
    assert soak.counts["kills during training"] + soak.counts["kills during checkpoint write"] >= 2
