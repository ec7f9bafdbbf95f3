"""Ready for the GPU, checked on the CPU: exact paths with TF32 off, fp32 meaning fp32, provenance naming the device
model, RNG states that resume with any number of GPUs, latent streams on the training device, no host
synchronisation in a training step, and deterministic kernels. The `cuda` tests check on a GPU what the CPU
cannot (run by benchmarks/gpu_check.py; skipped here)."""

from __future__ import annotations

import pytest
import torch

from bench.core import device as dev
from bench.core.config import RunConfig, parse_overrides
from bench.core.syncs import HostSyncs, optimizer_host_tensors
from bench.runs.resolve import resolve_config
from bench.runs.state import make_state, own_cuda_state, restore_latent_stream
from bench.runs.step import BatchSource, LossMeter, train_step

CPU = torch.device("cpu")
METHODS = ("faae", "aae", "bigan", "ali", "latent-recovery")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.py runs it)")


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_exact_paths_turn_tf32_off_and_restore_it():
    before = _tf32()
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    try:
        with dev.exact_fp32():
            assert _tf32() == (False, False)
        assert torch.backends.cudnn.allow_tf32 is True
        with dev.autocast(CPU, "fp32"):  # fp32 means fp32 on every device
            assert _tf32() == (False, False)
        with dev.tf32(True):
            assert _tf32() == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_is_a_precision_and_fp32_where_it_does_not_exist():
    assert dev.resolve_precision("tf32", CPU) == "fp32"
    cfg = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides(["train.precision=tf32"]), device=CPU)
    assert cfg.train.precision == "fp32"  # the config holds what the CPU computes
    with pytest.raises(ValueError, match="tf32"):
        resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides(["train.precision=fp16"]), device=CPU)


def test_exact_fid_and_lpips_run_with_tf32_off(monkeypatch, tmp_cache):
    import metrics.fidelity as F
    import metrics.lpips_metric as L

    seen = []
    real = F.get_featuresdict_from_dataset
    monkeypatch.setattr(F, "get_featuresdict_from_dataset", lambda *a, **k: seen.append(_tf32()) or real(*a, **k))
    torch.backends.cudnn.allow_tf32 = True
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    F.inception_features(images, mode="fp32")
    assert seen == [(False, False)] and torch.backends.cudnn.allow_tf32 is True
    prov = F.provenance(F.inception_weights(), "fp32", CPU, 4, 4)
    assert prov["tf32"] is False and prov["feature_mode"] == "exact"

    model, _ = L.lpips_model("alex", CPU)
    flags = []
    hook = model.register_forward_pre_hook(lambda *_: flags.append(_tf32()))
    try:
        L.lpips_distance(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    finally:
        hook.remove()
    assert flags == [(False, False)]


def test_provenance_names_the_device_model_and_warns_across_models():
    from bench.core.provenance import WARN_PROVENANCE, matches_any

    prov = dev.device_provenance(CPU)
    assert prov["device_model"] == dev.cpu_model() and "(" in prov["device_model"]
    assert matches_any("device_model", WARN_PROVENANCE) and matches_any("cudnn_version", WARN_PROVENANCE)


@pytest.mark.parametrize("saved_for, index, expected", [(8, 3, 3), (8, 0, 0), (1, 5, 0), (2, 7, 0), (0, 0, None)])
def test_cuda_rng_state_for_any_number_of_gpus(saved_for, index, expected):
    """A checkpoint written with N visible GPUs (one state each) or by one process (its own state) resumes on
    GPU `index` of any machine: its own entry when there is one, else the process's own, never an IndexError."""
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(saved_for)]
    got = own_cuda_state(states, index)
    assert (got is None) if expected is None else torch.equal(got, states[expected])


def test_latent_stream_resumes_exactly_on_its_device_and_freshly_on_another():
    gen = torch.Generator().manual_seed(3)
    torch.randn(5, generator=gen)
    state = gen.get_state()
    expected = torch.randn(5, generator=gen)
    resumed = torch.Generator()
    restore_latent_stream(resumed, state, seed=3, step=10)
    assert torch.equal(torch.randn(5, generator=resumed), expected)
    # a CUDA generator's state is 16 bytes: on the CPU it cannot be set, so the stream restarts from (seed, step)
    other = torch.Generator()
    restore_latent_stream(other, torch.zeros(16, dtype=torch.uint8), seed=3, step=10)
    again = torch.Generator()
    restore_latent_stream(again, torch.zeros(16, dtype=torch.uint8), seed=3, step=10)
    assert torch.equal(torch.randn(5, generator=other), torch.randn(5, generator=again))


def test_deterministic_is_a_switch_that_keeps_old_run_ids(monkeypatch):
    cfg = resolve_config("faae", "mnist5k", "smoke", device=CPU)
    assert cfg.train.deterministic is True
    d = cfg.to_dict()
    del d["train"]["deterministic"]  # a config stored before the switch existed
    assert RunConfig.from_dict(d).run_id() == cfg.run_id()
    off = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides(["train.deterministic=false"]), device=CPU)
    assert off.run_id() != cfg.run_id()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    with dev.deterministic(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == dev.CUBLAS_WORKSPACE
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before


def test_the_host_sync_counter_sees_what_would_stall_a_gpu():
    x = torch.randn(8)
    with HostSyncs() as h:
        _ = x[x > 0]  # a boolean mask: the result's size is read from the device
        _ = float(x.sum())
        y = torch.zeros(8)
        y[x > 0] = 1.0  # the same in an assignment
        _ = torch.where(x > 0, x, 0.0)  # no sync
    assert h.counts["boolean mask index"] == 2
    assert h.counts["aten._local_scalar_dense"] == 1 and h.total == 3


@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_never_waits_for_the_device(tmp_cache, method):
    """Batches gathered where the images are, latents drawn on the training device, losses kept there: no
    operator in a step (after the first, which creates Adam's state) reads a value back to the host."""
    from bench.core.data import load_dataset
    from methods.trained import build_method

    cfg = resolve_config(method, "mnist5k", "smoke", device=CPU)
    data = load_dataset(cfg.dataset, None, cfg.data)
    state = make_state(cfg, build_method(cfg, data))
    assert state.latent_gen.device == next(state.method.parameters()).device
    source, meter = BatchSource(data.train, CPU), LossMeter()
    order = source.order(torch.randperm(len(data.train)))
    meter.add(train_step(state, source.batch(order[:16], True), cfg, CPU), 0)
    with HostSyncs(optimizer_host_tensors(state.optimizers.values())) as syncs:
        for i in (1, 2):
            meter.add(train_step(state, source.batch(order[16 * i : 16 * (i + 1)], True), cfg, CPU), i)
    assert syncs.total == 0, syncs.describe()


def test_the_latent_search_never_waits_for_the_device():
    from bench.core.priors import get_prior
    from methods.backbones import Generator
    from methods.base import ModelSpec
    from methods.latent_recovery import recover_latents

    spec = ModelSpec(channels=1, resolution=32, latent_dim=8, width=8)
    G = Generator(spec)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad(), HostSyncs() as syncs:
        recover_latents(G, x, get_prior("uniform"), steps=3, lr=0.1, restarts=2, clip=True, dim=8,
                        generator=torch.Generator().manual_seed(0), optimizer="sgd")
    assert syncs.total == 0, syncs.describe()


# --- what only a GPU can show ---------------------------------------------------------------------------------
@cuda
@pytest.mark.cuda
def test_cuda_exact_features_equal_the_cpus(tmp_cache):
    from metrics.fidelity import inception_features

    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    on_cpu = inception_features(images, mode="fp32", device="cpu")
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: the exact path must turn it off itself
    on_gpu = inception_features(images, mode="fp32", device="cuda")
    assert (on_gpu - on_cpu).abs().max().item() <= 1e-5 * on_cpu.abs().max().item() + 1e-5


@cuda
@pytest.mark.cuda
def test_cuda_training_step_has_no_sync(tmp_cache):
    from bench.core.data import load_dataset
    from methods.trained import build_method, placed

    gpu = torch.device("cuda")
    cfg = resolve_config("faae", "mnist5k", "smoke", device=gpu)
    data = load_dataset(cfg.dataset, None, cfg.data)
    state = make_state(cfg, placed(build_method(cfg, data), cfg, gpu))
    source, meter = BatchSource(data.train, gpu), LossMeter()
    order = source.order(torch.randperm(len(data.train)))
    meter.add(train_step(state, source.batch(order[:16], True), cfg, gpu), 0)
    torch.cuda.synchronize()
    with HostSyncs(optimizer_host_tensors(state.optimizers.values())) as syncs:
        meter.add(train_step(state, source.batch(order[16:32], True), cfg, gpu), 1)
    assert syncs.total == 0, syncs.describe()


@cuda
@pytest.mark.cuda
def test_cuda_resume_equals_an_uninterrupted_run(tmp_cache):
    """With deterministic kernels (the default), 2 + 2 steps through a checkpoint equal 4 steps bit for bit."""
    from bench.core.data import load_dataset
    from bench.core.device import training_math
    from bench.runs.state import seed_everything
    from methods.trained import build_method, placed

    gpu = torch.device("cuda")
    cfg = resolve_config("ali", "mnist5k", "smoke", device=gpu)
    data = load_dataset(cfg.dataset, None, cfg.data)
    source = BatchSource(data.train, gpu)
    order = source.order(torch.arange(len(data.train)))

    def fresh():
        seed_everything(cfg.seed)
        return make_state(cfg, placed(build_method(cfg, data), cfg, gpu))

    def steps(state, start, stop):
        with training_math(gpu, cfg.train.precision, cfg.train.deterministic):
            for i in range(start, stop):
                train_step(state, source.batch(order[16 * i : 16 * (i + 1)], True), cfg, gpu)
                state.step += 1

    whole = fresh()
    steps(whole, 0, 4)
    half = fresh()
    steps(half, 0, 2)
    ckpt = half.state_dict(cfg)
    resumed = fresh()
    resumed.load(ckpt)
    steps(resumed, 2, 4)
    a, b = whole.method.state_dict(), resumed.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
