"""Data-parallel training with the real parts: two gloo processes, DistributedDataParallel, and torchrun."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from bench.core.checkpoint import load_checkpoint
from bench.core.config import parse_overrides
from bench.core.data import ImageData
from bench.core.distributed import SINGLE, World, process_group, training_provenance, world_from_env
from bench.core.errors import UsageError
from bench.core.layout import CHECKPOINT
from bench.core.store import Store
from bench.runs.execute import execute
from bench.runs.loop import train
from bench.runs.parallel import StoppedByMain, check_data_parallel, on_main
from bench.runs.resolve import resolve_config
from bench.runs.state import epoch_order, make_state, seed_everything
from bench.runs.step import DivergedError, LossMeter
from methods.base import ModelSpec
from methods.faae import FAAE

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def torchrun(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def smoke(**sets):
    return resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides([f"{k}={v}" for k, v in sets.items()]))


# --- two ranks of the runner's own loop ------------------------------------------------------------------
N_IMAGES = 64
SETTINGS = {"train.max_steps": 3, "train.batch_size": 16, "train.log_every": 2, "train.sample_every": 1000}


def synthetic() -> ImageData:
    """Image i holds i // 256 and i % 256 in its first two pixels, noise elsewhere."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (N_IMAGES, 1, 32, 32), dtype=torch.uint8, generator=g)
    ids = torch.arange(N_IMAGES)
    train[:, 0, 0, 0], train[:, 0, 0, 1] = (ids // 256).to(torch.uint8), (ids % 256).to(torch.uint8)
    return ImageData("synthetic", train, train[:8].clone(), train_sha256="synthetic-train")


def image_ids(x: torch.Tensor) -> list[int]:
    px = (x[:, 0, 0, :2].float() * 255).round().long()
    return (px[:, 0] * 256 + px[:, 1]).tolist()


class Recording(FAAE):
    """F-AAE noting the images of each step and every latent batch it draws."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.seen: list[list[int]] = []
        self.drawn: list[torch.Tensor] = []

    def phase_loss(self, phase, x, ctx):
        if phase == "reencode":  # the first phase of each step
            self.seen.append(image_ids(x))
        return super().phase_loss(phase, x, ctx)

    def sample_prior(self, n, generator=None):
        z = super().sample_prior(n, generator)
        self.drawn.append(z.detach().clone())
        return z


def rank_main(rank: int, port: int, out: Path, steps: int, resume: Path | None) -> None:
    """One of two processes (forked: no second import of torch): `steps` smoke steps of F-AAE through the runner's
    loop on the synthetic images, from the start or resuming the checkpoint `resume` as the runner does, noting
    what this rank saw; then rank 0 fails a write that every rank waits for, and rank 1 alone sees a non-finite
    loss. Saves its record to out/rank<r>.pt; rank 0 writes the run's files to out/run."""
    try:
        torch.set_num_threads(1)  # as torch's DataLoader workers do after a fork
        os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        world = world_from_env()
        cfg = smoke(**{**SETTINGS, "train.max_steps": steps})
        run_dir = out / "run"
        record: dict = {"rank": world.rank}
        with process_group(world, CPU):
            seed_everything(cfg.seed)
            method = Recording(ModelSpec(1, 32, cfg.model.latent_dim, cfg.model.width, cfg.model.prior))
            method = method.to(memory_format=torch.channels_last)
            state = make_state(cfg, method)
            ckpt = load_checkpoint(resume) if resume else None
            if ckpt is not None:
                state.load(ckpt)
                state.finished = False
            if not world.is_main:
                state.rank_streams(ckpt, cfg.seed, world)
            record["init"] = {k: v.detach().clone() for k, v in method.named_parameters()}
            train(cfg, state, synthetic(), CPU, run_dir, progress=False, world=world)
            record.update(seen=method.seen, drawn=method.drawn, latent_gen=state.latent_gen.get_state(),
                          params={k: v.detach().clone() for k, v in method.named_parameters()},
                          buffers={k: v.clone() for k, v in method.named_buffers()})

            def failing_write() -> None:
                raise OSError("the disk of rank 0 is full")

            try:
                on_main(world, failing_write)
                record["write"] = "no error"
            except StoppedByMain:
                record["write"] = "stopped"
            except OSError as e:
                record["write"] = f"raised: {e}"

            meter = LossMeter()
            meter.add({"loss": torch.tensor(float("nan") if world.rank == 1 else 1.0)}, step=7)
            try:
                record["diverged"] = f"read {meter.read(world)}"
            except DivergedError as e:
                record["diverged"] = str(e)
        torch.save(record, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(out: Path, steps: int = 3, resume: Path | None = None) -> tuple[dict, dict]:
    """rank_main in two forked processes; their records."""
    (out / "run" / "samples").mkdir(parents=True)
    ctx, port = multiprocessing.get_context("fork"), free_port()
    procs = [ctx.Process(target=rank_main, args=(rank, port, out, steps, resume)) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.exitcode is None:
            p.kill()
    errors = [f.read_text() for f in sorted(out.glob("rank*.err"))]
    assert [p.exitcode for p in procs] == [0, 0], errors
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return r0, r1


@pytest.mark.slow
def test_two_ranks_share_each_batch_draw_their_own_latents_and_keep_equal_weights(tmp_path):
    r0, r1 = two_ranks(tmp_path)
    cfg = smoke(**SETTINGS)
    order = epoch_order(cfg, N_IMAGES, 0).tolist()
    assert len(r0["seen"]) == len(r1["seen"]) == 3
    for step, (a, b) in enumerate(zip(r0["seen"], r1["seen"])):
        # the global batch of 16 (the (seed, epoch) order), split into disjoint halves: rank 0 the first
        assert a == order[step * 16 : step * 16 + 8] and b == order[step * 16 + 8 : step * 16 + 16]
    assert len(r0["drawn"]) == len(r1["drawn"]) > 0
    for za, zb in zip(r0["drawn"], r1["drawn"]):
        assert za.shape == zb.shape == (8, cfg.model.latent_dim) and not torch.allclose(za, zb)
    # DDP's averaged gradients keep the weights bit-identical on both ranks, and they did move
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    assert not all(torch.equal(r0["params"][k], r0["init"][k]) for k in r0["params"])
    # on gloo BatchNorm's statistics are per process (no SyncBatchNorm on the CPU)
    means = [k for k in r0["buffers"] if k.endswith("running_mean")]
    assert means and not torch.equal(r0["buffers"][means[0]], r1["buffers"][means[0]])
    # rank 0 alone wrote; its checkpoint holds both ranks' streams, so that two processes resume exactly
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ckpt["step"] == 3 and ckpt["finished"] and ckpt["parallel"] == [[2, 8]]
    assert [torch.equal(e["latent_gen"], s) for e, s in zip(ckpt["ranks"], (r0["latent_gen"], r1["latent_gen"]))] \
        == [True, True]
    assert torch.equal(ckpt["latent_gen"], r0["latent_gen"]) and not torch.equal(r0["latent_gen"], r1["latent_gen"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 3]
    # a write failing on rank 0 stops rank 1 too, and a non-finite loss on rank 1 stops both
    assert r0["write"] == "raised: the disk of rank 0 is full" and r1["write"] == "stopped"
    assert r0["diverged"] == r1["diverged"] == "non-finite loss at step 7: loss"

    # two processes resume a two-process checkpoint exactly: 2 steps, then the third, equal 3 steps in one go
    first, _ = two_ranks(tmp_path / "first", steps=2)
    assert first["params"].keys() == r0["params"].keys()
    resumed, _ = two_ranks(tmp_path / "resumed", steps=3, resume=tmp_path / "first" / "run" / CHECKPOINT)
    assert len(resumed["seen"]) == 1 and resumed["seen"][0] == r0["seen"][2]
    assert all(torch.equal(resumed["params"][k], r0["params"][k]) for k in r0["params"])


@pytest.mark.slow
def test_torchrun_trains_one_run_that_one_process_resumes_and_evaluates(tmp_path, shared_cache):
    out = tmp_path / "ddp"
    done = torchrun("-m", "bench", "run", "--methods", "faae", "--protocol", "smoke", "--out", str(out),
                    "--device", "cpu", "--no-progress", "--no-report")  # gloo, on a machine with a GPU too
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = smoke()
    store = Store(out / "results.db")
    [row] = store.runs()
    assert row["run_id"] == cfg.run_id() and row["status"] == "done" and row["steps"] == 6
    assert "DDP gloo x2 processes, batch 16 per process" in row["device"]
    values = {m["key"]: m for m in store.metric_rows()}
    assert values["recon_mse"]["value"] is not None
    assert values["recon_mse"]["provenance"]["train_world_size"] == 2
    assert values["train_images_per_s"]["value"] > 0
    [log] = (out / "runs").glob("*/log.jsonl")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6]
    assert json.loads((out / "runs" / cfg.run_id() / "result.json").read_text())["run"]["status"] == "done"

    # one process evaluates the two-process checkpoint: the same weights give the same value
    from bench.cli import main

    assert main(["eval", "--out", str(out), "--metrics", "mse", "--overwrite", "--device", "cpu"]) == 0
    again = {m["key"]: m for m in Store(out / "results.db").metric_rows()}
    assert again["recon_mse"]["value"] == values["recon_mse"]["value"]
    assert again["recon_mse"]["provenance"]["train_world_size"] == 2

    # and resumes it: the checkpoint of step 6 continued to step 8 by a single process
    longer = smoke(**{"train.max_steps": 8})
    ckpt = load_checkpoint(out / "runs" / cfg.run_id() / CHECKPOINT)
    assert ckpt["parallel"] == [[2, 16]] and len(ckpt["ranks"]) == 2
    ckpt.update(finished=False, config=longer.to_dict())
    run_dir = tmp_path / "resumed" / "runs" / longer.run_id()
    run_dir.mkdir(parents=True)
    torch.save(ckpt, run_dir / CHECKPOINT)
    [res] = execute([longer], tmp_path / "resumed", None, CPU, metrics=["mse"], progress=False)
    assert res.status == "done"
    resumed = load_checkpoint(run_dir / CHECKPOINT)
    assert resumed["step"] == 8 and resumed["finished"] and resumed["parallel"] == [[2, 16], [1, 32]]
    assert "ranks" not in resumed
    value = {m["key"]: m for m in Store(tmp_path / "resumed" / "results.db").metric_rows()}["recon_mse"]
    assert value["provenance"]["train_world_size"] == "2/1" and value["provenance"]["train_batch_per_rank"] == "16/32"


def test_world_from_the_environment_and_refusals():
    assert world_from_env({}) == SINGLE
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == World(1, 2, 1)
    with pytest.raises(UsageError, match="RANK"):
        world_from_env({"WORLD_SIZE": "2"})
    two = World(0, 2, 0)
    check_data_parallel([smoke()], two)
    with pytest.raises(UsageError, match="one run"):
        check_data_parallel([smoke(), resolve_config("aae", "mnist5k", "smoke")], two)
    with pytest.raises(UsageError, match="multiple of --nproc-per-node"):
        check_data_parallel([smoke(**{"train.batch_size": 33})], two)
    assert training_provenance([[1, 64]]) == {}
    assert training_provenance([[2, 32]]) == {"train_world_size": 2, "train_batch_per_rank": 32}


def test_values_of_two_processes_are_compared_with_one_processs_with_a_warning():
    from bench.compare.verdicts import Comparison, _check_provenance
    from bench.core.records import StoredValue

    one = {"metric": "mse", "n_images": 64, "split": "test", "device": "cpu"}
    two = {**one, **training_provenance([[2, 32]])}
    out = Comparison(None, None, [], 0.05)
    _check_provenance("faae", "mnist5k", "recon_mse", [StoredValue("mse", "recon_mse", 0.1, one)],
                      [StoredValue("mse", "recon_mse", 0.1, two)], out, gated=True)
    assert [w for w in out.warnings if "train_world_size" in w] and [w for w in out.warnings if "train_batch_per_rank" in w]


# --- rank 0 releases the other ranks before it evaluates -------------------------------------------------
def test_rank_0_releases_the_other_ranks_before_any_evaluation(tmp_path, shared_cache, monkeypatch):
    """A finished run and a refinement are evaluated by rank 0 alone: the other ranks, waiting to learn whether
    rank 0 trains, are released first (NCCL's watchdog would kill a rank waiting through an evaluation), also when
    the evaluation fails. The other rank is a record here (Followers' one message); tests below run it for real."""
    import bench.runs.execute as runner
    from bench.runs.followers import Followers

    out = tmp_path / "out"
    [base] = execute([smoke()], out, None, CPU, metrics=["mse"], progress=False)
    assert base.status == "done"
    events: list[str] = []

    class Recorded(Followers):
        def _tell(self, plan):
            self.told = True
            events.append("release" if plan is None else "start")

    def evaluating(*args, **kwargs):
        events.append("evaluate")

    monkeypatch.setattr(runner, "Followers", Recorded)
    monkeypatch.setattr(runner, "evaluate", evaluating)
    two = World(0, 2, 0)
    for cfg in (smoke(), resolve_config("faae+sc", "mnist5k", "smoke", 0)):  # a finished run, a refinement
        events.clear()
        [r] = execute([cfg], out, None, CPU, metrics=["mse"], progress=False, world=two)
        assert r.status == "done" and events == ["release", "evaluate"], (cfg.method, events)

    def failing(*args, **kwargs):
        events.append("evaluate")
        raise RuntimeError("the evaluation failed")

    monkeypatch.setattr(runner, "evaluate", failing)
    events.clear()
    with pytest.raises(RuntimeError, match="the evaluation failed"):
        execute([smoke()], out, None, CPU, metrics=["mse"], progress=False, world=two)
    assert events == ["release", "evaluate"]  # told once, before


#: loaded by both ranks of the torchrun below: rank 1 notes when its process ends, rank 0's evaluation notes
#: whether rank 1 had ended before it began (it waits up to a minute for that)
EXIT_MARKER = '''
import atexit, os, time
from pathlib import Path

import bench.runs.execute as runner

marks = Path(os.environ["AEGAN_TEST_MARKS"])
if os.environ.get("RANK", "0") != "0":
    atexit.register(lambda: (marks / "follower-exited").write_text(str(time.time())))
else:
    evaluate = runner.evaluate

    def waiting_evaluate(*args, **kwargs):
        deadline = time.monotonic() + 60
        while not (marks / "follower-exited").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (marks / "evaluation").write_text("after the follower exited" if (marks / "follower-exited").exists()
                                          else "while the follower waited")
        return evaluate(*args, **kwargs)

    runner.evaluate = waiting_evaluate
'''


@pytest.mark.soak  # a real torchrun of two processes (~40 s): CI's second step
def test_torchrun_follower_exits_before_rank_0_evaluates_a_refinement(tmp_path, shared_cache, monkeypatch):
    from bench.cli import main

    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    plugin = tmp_path / "exit_marker.py"
    plugin.write_text(EXIT_MARKER)
    grid = ["--protocol", "smoke", "--out", str(out), "--device", "cpu", "--metrics", "mse", "--no-progress",
            "--no-report"]
    assert main(["run", "--methods", "faae", *grid]) == 0  # the base, by one process
    monkeypatch.setenv("AEGAN_TEST_MARKS", str(marks))
    done = torchrun("-m", "bench", "run", "--methods", "faae+sc", *grid, "--plugin", str(plugin))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (marks / "evaluation").read_text() == "after the follower exited"
    store = Store(out / "results.db")
    row = store.get_run(resolve_config("faae+sc", "mnist5k", "smoke", 0).run_id())
    assert row["status"] == "done"
