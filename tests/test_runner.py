"""Runner: repeatable with a seed, resumes exactly after a kill, records divergence, store stays clean."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.core.checkpoint import load_checkpoint
from bench.core.config import parse_overrides
from bench.core.layout import CHECKPOINT
from bench.core.store import Store
from bench.runs.execute import execute
from bench.runs.resolve import resolve_config
from methods import METHODS
from methods.faae import FAAE

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def smoke(method="faae", seed=0, **sets):
    items = [f"{k}={v}" for k, v in sets.items()]
    return resolve_config(method, "mnist5k", "smoke", seed, parse_overrides(items))


def weights(out: Path, cfg) -> dict:
    return load_checkpoint(out / "runs" / cfg.run_id() / CHECKPOINT)["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seed_repeats_a_cpu_run_exactly(tmp_path, tmp_cache):
    cfg = smoke()
    execute([cfg], tmp_path / "a", None, CPU, progress=False)
    execute([cfg], tmp_path / "b", None, CPU, progress=False)
    assert same(weights(tmp_path / "a", cfg), weights(tmp_path / "b", cfg))
    other = smoke(seed=1)
    execute([other], tmp_path / "c", None, CPU, progress=False)
    assert not same(weights(tmp_path / "a", cfg), weights(tmp_path / "c", other))


def test_resume_continues_exactly(tmp_path, tmp_cache):
    """24 steps in one go equal 12 steps, a stop and a resume to 24: the 8-step run is given the checkpoint
    that a 12-step run left (same seed, same data order), as a kill after step 12 would leave it."""
    full = smoke(**{"train.max_steps": 24, "train.batch_size": 16})
    execute([full], tmp_path / "full", None, CPU, progress=False)
    # a run of the same config killed after step 4: reproduce its checkpoint by stopping early
    half = smoke(**{"train.max_steps": 12, "train.batch_size": 16, "train.epochs": 1})
    execute([half], tmp_path / "half", None, CPU, progress=False)
    ckpt = load_checkpoint(tmp_path / "half" / "runs" / half.run_id() / CHECKPOINT)
    ckpt["finished"] = False
    ckpt["config"] = full.to_dict()
    run_dir = tmp_path / "resumed" / "runs" / full.run_id()
    run_dir.mkdir(parents=True)
    torch.save(ckpt, run_dir / CHECKPOINT)
    execute([full], tmp_path / "resumed", None, CPU, progress=False)
    assert load_checkpoint(run_dir / CHECKPOINT)["step"] == 24
    assert same(weights(tmp_path / "full", full), weights(tmp_path / "resumed", full))


@pytest.mark.slow
def test_sigkill_then_rerun_resumes(tmp_path, tmp_cache):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench", "run", "--methods", "faae", "--protocol", "smoke", "--out", str(out),
           "--no-progress", "--set", "train.max_steps=150", "--set", "train.ckpt_every_s=0",
           "--set", "train.batch_size=16", "--set", "train.epochs=100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = smoke(**{"train.max_steps": 150, "train.ckpt_every_s": 0, "train.batch_size": 16, "train.epochs": 100})
    ckpt = out / "runs" / cfg.run_id() / CHECKPOINT
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step = load_checkpoint(ckpt)["step"]
            except Exception:
                step = 0
            if step >= 10:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 10 <= killed_at < 150
    with sqlite3.connect(out / "results.db") as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
        assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    state = load_checkpoint(ckpt)
    assert state["step"] == 150 and state["finished"]
    steps_logged = [int(line.split('"step": ')[1].split(",")[0]) for line in (ckpt.parent / "log.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(set(steps_logged)), "a step was logged twice after the resume"
    with sqlite3.connect(out / "results.db") as con:
        assert con.execute("SELECT COUNT(*), MIN(status) FROM runs").fetchone() == (1, "done")
        keys = [r[0] for r in con.execute("SELECT key FROM metrics")]
    assert len(keys) == len(set(keys)) > 0


def test_divergence_is_recorded(tmp_path, tmp_cache, monkeypatch):
    class Exploding(FAAE):
        name = "exploding"

        def phase_loss(self, phase, x, ctx):
            losses = super().phase_loss(phase, x, ctx)
            if ctx.step >= 2:
                losses["loss"] = losses["loss"] * float("nan")
            return losses

    monkeypatch.setitem(METHODS._items, "exploding", Exploding)
    cfg = smoke("exploding")
    [res] = execute([cfg], tmp_path, None, CPU, progress=False)
    assert res.status == "diverged" and "step 2" in res.message
    row = Store(tmp_path / "results.db").get_run(cfg.run_id())
    assert row["status"] == "diverged" and "non-finite" in row["message"]
    # rerunning does not retrain a diverged run unless asked to
    [again] = execute([cfg], tmp_path, None, CPU, progress=False)
    assert again.status == "diverged"


def test_no_checkpoint_follows_a_non_finite_loss(tmp_path, shared_cache, monkeypatch):
    """Losses are read at log lines only (none here before the end), but every checkpoint reads them first: the
    run stops at the checkpoint after the bad step, and the file keeps the weights from before it."""
    class LateExploding(FAAE):
        name = "late-exploding"

        def phase_loss(self, phase, x, ctx):
            losses = super().phase_loss(phase, x, ctx)
            if ctx.step >= 3 and phase == "gen":
                losses["loss"] = losses["loss"] * float("inf")
            return losses

    monkeypatch.setitem(METHODS._items, "late-exploding", LateExploding)
    cfg = smoke("late-exploding", **{"train.log_every": 100, "train.ckpt_every_s": 0})
    [res] = execute([cfg], tmp_path, None, CPU, progress=False)
    assert res.status == "diverged" and res.message == "non-finite loss at step 3: gen/loss"
    ckpt = load_checkpoint(tmp_path / "runs" / cfg.run_id() / CHECKPOINT)
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_loss_meter_means_and_first_bad_step():
    from bench.runs.step import DivergedError, LossMeter

    meter = LossMeter()
    meter.add({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step=0)
    meter.add({"a": torch.tensor(3.0), "b": torch.tensor(6.0)}, step=1)
    assert meter.read() == ({"a": 2.0, "b": 4.0}, False)
    meter.reset()
    assert meter.read() == ({}, False)
    meter.add({"a": torch.tensor(1.0), "b": torch.tensor(float("nan"))}, step=2)
    meter.add({"a": torch.tensor(float("inf")), "b": torch.tensor(float("nan"))}, step=3)
    with pytest.raises(DivergedError, match=r"^non-finite loss at step 2: b$"):
        meter.read()


def _writer(path: str, worker: int) -> None:
    from metrics.base import MetricValue

    store = Store(path)
    for i in range(25):
        rid = f"w{worker}-{i}"
        store.upsert_run(rid, method="faae", variant="faae", dataset="d", protocol="p", seed=i, config_json={},
                         config_hash="h", code_version="c", packages_json={}, device="cpu", dtype="fp32",
                         status="running", run_dir="x")
        store.put_metrics(rid, "mse", [MetricValue("recon_mse", float(i), {"n_images": 1})])


def test_store_two_processes(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "results.db")
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = Store(path)
    assert len(store.runs()) == 50 and len(store.metric_rows()) == 50


def _create_and_write(path: str, start: float, w: int) -> None:
    while time.time() < start:  # every process opens the new store at the same moment
        pass
    _writer(path, w)


@pytest.mark.soak  # a stress test of ~50 s: with the fault-injection soak in CI's second step
def test_processes_creating_one_store_at_once(tmp_path):
    """Switching a new SQLite file to WAL needs it to itself, and SQLite answers "locked" at once there (no busy
    wait): processes that create one store together must take turns instead of failing."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for trial in range(3):
        path = str(tmp_path / f"results{trial}.db")
        start = time.time() + 3
        procs = [ctx.Process(target=_create_and_write, args=(path, start, w)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        assert len(Store(path).runs()) == 100


def _trained_after(cfg, adam_eps: float | None = None) -> dict:
    from bench.core.data import load_dataset
    from bench.runs.state import make_state
    from bench.runs.step import to_batch, train_step
    from methods.trained import build_method

    data = load_dataset(cfg.dataset, None, cfg.data)
    torch.manual_seed(0)
    state = make_state(cfg, build_method(cfg, data))
    for opt in state.optimizers.values() if adam_eps is not None else ():
        for group in opt.param_groups:
            group["eps"] = adam_eps
    for i in range(3):
        train_step(state, to_batch(data.train[i * 16:(i + 1) * 16], CPU, False), cfg, CPU)
    return state


@pytest.mark.parametrize("mode", ["phase", "network"])
def test_optimizer_state_modes_and_what_loss_weights_do(tmp_cache, mode):
    """One Adam per phase makes a phase's constant loss weight a no-op (Adam is scale-invariant); one Adam
    per network lets the weights balance the phases that share a network. The comparison is exact on any CPU:
    weights a power of two apart scale every gradient exactly, and Adam's eps (the one term that is not
    scale-free; with it, tiny gradients make the gap depend on the CPU's kernels) is set to nearly 0."""
    sets = {"optim.state": mode, "train.precision": "fp32", "train.batch_size": 16}
    a = _trained_after(smoke(**sets, **{"loss.rec_weight": 64.0}), adam_eps=1e-30)
    b = _trained_after(smoke(**sets, **{"loss.rec_weight": 1024.0}), adam_eps=1e-30)
    keys = {"phase": {"reencode", "disc", "gen"}, "network": {"G", "E", "D"}}[mode]
    assert set(a.optimizers) == keys
    ga, gb = a.method.G.state_dict(), b.method.G.state_dict()
    gap = max(float((ga[k] - gb[k]).abs().max()) for k in ga)
    if mode == "phase":
        assert gap == 0
    else:
        assert gap > 1e-4


@pytest.mark.parametrize("method,adv_phase", [("faae", "gen"), ("aae", "gen")])
def test_adversarial_phase_learning_rate(tmp_cache, method, adv_phase):
    """optim.lr_adv_scale sets the rate of the phase where G (F-AAE) or E (AAE) learns to fool D, and only
    that phase's; with one Adam per network it is refused, since a network's phases share one rate there."""
    from bench.core.config import ConfigError
    from bench.core.data import load_dataset
    from bench.runs.state import make_state
    from methods.trained import build_method

    cfg = smoke(method, **{"optim.lr_adv_scale": 0.25, "optim.lr_g": 4e-4, "optim.lr_d": 1e-3})
    state = make_state(cfg, build_method(cfg, load_dataset(cfg.dataset, None, cfg.data)))
    lrs = {k: opt.param_groups[0]["lr"] for k, opt in state.optimizers.items()}
    assert lrs.pop(adv_phase) == pytest.approx(1e-4) and lrs.pop("disc") == pytest.approx(1e-3)
    assert lrs and all(v == pytest.approx(4e-4) for v in lrs.values())
    assert resolve_config(method, "cifar10", "paper").optim.lr_adv_scale == 1.0
    with pytest.raises(ConfigError, match="lr_adv_scale=0.25 needs optim.state=phase"):
        smoke(method, **{"optim.lr_adv_scale": 0.25, "optim.state": "network"})
    # methods without such a phase take quick's scale with either optimiser layout
    assert resolve_config("bigan", "cifar10", "quick", 0, parse_overrides(["optim.state=network"])).optim.state == "network"
