"""BiGAN, ALI, the plain GAN with latent recovery, and the "+sc" refinements beyond the registry contract."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from bench.cli import main
from bench.core.checkpoint import load_checkpoint, save_checkpoint
from bench.core.config import ConfigError, parse_overrides
from bench.core.layout import CHECKPOINT
from bench.core.protocols import PROTOCOLS
from bench.runs.execute import MissingBaseRunError, check_bases
from bench.runs.resolve import resolve_config
from methods import METHODS, ModelSpec, StepContext
from methods.ali import LOG_SIGMA_MAX
from methods.latent_recovery import REFINABLE, per_image_sq_error
from methods.trained import load_weights, run_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: with several threads on a busy shared CPU, OpenMP overhead made these tests 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(name: str, prior: str = "sphere", params=None):
    torch.manual_seed(0)
    return METHODS.get(name)(ModelSpec(3, 16, latent_dim=16, width=8, prior=prior), params)


def ctx(seed: int = 0) -> StepContext:
    return StepContext(step=0, epoch=0, rec_weight=100.0, adv_weight=0.1, generator=torch.Generator().manual_seed(seed))


def codes_seen_by_d(m, phase: str, x: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    hook = m.D.register_forward_hook(lambda mod, args, out: seen.append(args[1].detach()))
    try:
        m.phase_loss(phase, x, ctx())
    finally:
        hook.remove()
    return seen


# --- BiGAN / ALI ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bigan", "ali"])
def test_joint_discriminator_sees_codes_on_the_sphere(name):
    m = tiny(name)
    x = torch.rand(6, 3, 16, 16)
    for phase in ("disc", "gen"):
        real, fake = codes_seen_by_d(m, phase, x)
        # both halves of every pair have unit norm: D cannot tell them apart by the norm alone
        assert torch.allclose(real.norm(dim=1), torch.ones(6), atol=1e-5)
        assert torch.allclose(fake.norm(dim=1), torch.ones(6), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(m.eval().encode(x).norm(dim=1), torch.ones(6), atol=1e-5)


def test_bigan_gaussian_prior_code_is_the_encoder_output():
    m = tiny("bigan", "gaussian").eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m.encode(x), m.E(x))


@pytest.mark.parametrize("name", ["bigan", "ali"])
def test_labels_real_pairs_vs_fake_pairs_and_flipped_for_g_and_e(name):
    """With a D that outputs a constant logit c, each term must be the BCE of the right label."""
    m = tiny(name)
    c = 0.7
    m.D.forward = lambda x, z: torch.full((x.shape[0],), c) + 0 * z.sum(1)
    x = torch.rand(4, 3, 16, 16)
    d = m.phase_loss("disc", x, ctx())
    g = m.phase_loss("gen", x, ctx())
    minus_log_d, minus_log_1md = F.softplus(torch.tensor(-c)), F.softplus(torch.tensor(c))
    assert torch.allclose(d["d_real"], minus_log_d) and torch.allclose(d["d_fake"], minus_log_1md)
    assert torch.allclose(g["e_adv"], minus_log_1md) and torch.allclose(g["g_adv"], minus_log_d)
    assert torch.allclose(g["loss"], 0.1 * (g["e_adv"] + g["g_adv"]))


def test_ali_stochastic_encoder():
    m = tiny("ali")
    x = torch.rand(5, 3, 16, 16)
    a = m.posterior_sample(x, torch.Generator().manual_seed(1))
    b = m.posterior_sample(x, torch.Generator().manual_seed(2))
    c = m.posterior_sample(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b) and torch.equal(a, c)  # noise from the given generator only
    mu, log_sigma = m.E(x)
    # the sample is mu + sigma * eps with the generator's normal draws (reparameterised: differentiable)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, mu + log_sigma.exp() * eps, atol=1e-6)
    assert a.requires_grad
    # initial noise at the prior's per-coordinate scale (1/sqrt(16) for the 16-dim sphere)
    assert log_sigma.exp().mean().item() == pytest.approx(1 / math.sqrt(16), rel=0.5)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m.encode(x), m.encode(x))
        assert torch.allclose(m.encode(x), m.prior.project(m.E(x)[0]), atol=1e-6)  # the projected mean
        m.E.net.fc.bias[16:].fill_(50.0)
        assert m.E(x)[1].max().item() == LOG_SIGMA_MAX


def test_ali_training_step_repeats_with_a_seed_and_has_dropout():
    x = torch.rand(4, 3, 16, 16)
    losses = []
    for _ in range(2):
        m = tiny("ali")
        torch.manual_seed(3)  # dropout masks
        losses.append(m.phase_loss("gen", x, ctx(7))["loss"])
    assert torch.equal(losses[0], losses[1])
    drops = [mod.p for mod in tiny("ali").D.modules() if isinstance(mod, torch.nn.Dropout)]
    assert drops and all(p == 0.2 for p in drops)
    assert not [mod for mod in tiny("bigan").D.modules() if isinstance(mod, torch.nn.Dropout)]
    assert resolve_config("ali", "mnist5k", "smoke", overrides={"method": {"dropout": "0.5"}}).params["dropout"] == 0.5
    with pytest.raises(ConfigError, match="dropout"):
        resolve_config("ali", "mnist5k", "smoke", overrides={"method": {"dropout": "1.5"}})


# --- latent recovery ------------------------------------------------------------------------------------
def test_gan_encode_by_search_under_no_grad():
    P = METHODS.get("latent-recovery").Params
    m = tiny("latent-recovery", params=P(steps=60, restarts=2, lr=0.3)).eval()
    z_star = m.sample_prior(4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = m.decode(z_star)
        z = m.encode(x)
        again = m.encode(x)
        start = per_image_sq_error(m.decode(m.sample_prior(4, torch.Generator().manual_seed(2))), x)
        err = per_image_sq_error(m.decode(z), x)
    assert torch.equal(z, again)  # the search's own seeded generator: encode is repeatable
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert (err < 0.5 * start).all(), (err, start)
    assert not m.training and all(p.requires_grad and p.grad is None for p in m.parameters())


def test_protocol_sizes_and_overrides():
    steps = {p: resolve_config("latent-recovery", "cifar10", p).params["steps"] for p in ("smoke", "quick", "paper")}
    assert steps["smoke"] <= 10 and steps["smoke"] < steps["quick"] < steps["paper"] and steps["paper"] >= 1000
    cfg = resolve_config("faae+sc", "cifar10", "quick", overrides={"method": {"steps": "7", "clip": "hard"}})
    assert cfg.params["steps"] == 7 and cfg.params["clip"] == "hard" and cfg.params["restarts"] == 1
    with pytest.raises(ConfigError, match="clip"):
        resolve_config("latent-recovery", "cifar10", "smoke", overrides={"method": {"clip": "sometimes"}})


# --- the "+sc" refinements -----------------------------------------------------------------------------
def test_refinements_registered_after_the_methods():
    names = list(METHODS)
    assert names[:6] == ["faae", "aae", "bigan", "ali", "latent-recovery", "faae+sc"]
    for base in REFINABLE:
        cls = METHODS.get(f"{base}+sc")
        assert cls.base_method == base and cls.phases == ()


@pytest.mark.parametrize("base", REFINABLE)
def test_refinement_loads_base_and_improves_its_reconstruction(base):
    trained = tiny(base).eval()
    with torch.no_grad():
        for p in trained.parameters():  # "trained" weights, unlike the refinement's fresh init
            p.add_(0.05 * torch.randn_like(p))
    P = METHODS.get(f"{base}+sc").Params
    ref = tiny(f"{base}+sc", params=P(steps=40, lr=0.3)).eval()
    ref.load_base_state(trained.state_dict())
    z_star = trained.sample_prior(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = trained.decode(z_star)  # images G can make: the base's encoder only approximately inverts G
        assert torch.equal(ref.decode(z_star), x)
        base_err = per_image_sq_error(trained.reconstruct(x), x)
        ref_err = per_image_sq_error(ref.reconstruct(x), x)
    assert (ref_err <= base_err + 1e-7).all()  # the search keeps the best code seen, E(x) included
    assert ref_err.mean() < 0.5 * base_err.mean(), (ref_err, base_err)


# --- the runner reuses the base run -----------------------------------------------------------------------
def test_runner_loads_the_base_checkpoint(tmp_path):
    cfg = resolve_config("faae+sc", "mnist5k", "smoke")
    base = tiny("faae")
    path = run_checkpoint(cfg, tmp_path)
    assert path.name == CHECKPOINT and path.parent.name == dataclasses.replace(
        resolve_config("faae", "mnist5k", "smoke")).run_id()
    with pytest.raises(MissingBaseRunError, match="--methods faae --dataset mnist5k --protocol smoke"):
        check_bases([cfg], tmp_path)
    check_bases([resolve_config("faae", "mnist5k", "smoke"), cfg], tmp_path)  # scheduled first: fine
    with pytest.raises(MissingBaseRunError, match="list faae before faae\\+sc"):
        check_bases([cfg, resolve_config("faae", "mnist5k", "smoke")], tmp_path)
    path.parent.mkdir(parents=True)
    save_checkpoint({"model": base.state_dict(), "finished": False}, path)
    with pytest.raises(MissingBaseRunError):
        check_bases([cfg], tmp_path)  # an unfinished base run
    save_checkpoint({"model": base.state_dict(), "finished": True}, path)
    check_bases([cfg], tmp_path)
    ref = tiny("faae+sc")
    with torch.no_grad():
        for p in ref.parameters():
            p.zero_()
    load_weights(ref, load_checkpoint(path), path)
    assert all(torch.equal(a, b) for a, b in zip(ref.base.state_dict().values(), base.state_dict().values()))


@pytest.mark.parametrize("base", REFINABLE)
def test_a_refinement_finds_its_base_run_by_the_base_runs_own_id(base, tmp_path):
    """One id rule: a refinement resolves to its base's sections (BiGAN's optimiser included), so the base run it
    reuses is the one `--methods BASE` trains, under every protocol and with --set overrides; listed together, the
    base is scheduled before the refinement."""
    for protocol in PROTOCOLS:
        for dataset in ("mnist5k", "cifar10"):
            sets = parse_overrides(["train.max_steps=7", "model.prior=gaussian"])
            own = resolve_config(base, dataset, protocol, 2, sets)
            refined = resolve_config(f"{base}+sc", dataset, protocol, 2, sets)
            assert run_checkpoint(refined, tmp_path).parent.name == own.run_id(), (protocol, dataset)
    check_bases([own, refined], tmp_path)


@pytest.mark.soak  # eight smoke runs in one command: in CI's second step
def test_every_refinement_runs_after_its_base_and_every_printed_line_fits(tmp_path, tmp_cache, capsys):
    """The four trained methods and their four refinements in one smoke command: every refinement's metrics are
    stored, and no line the command prints is wider than 100 columns."""
    import sqlite3

    out = tmp_path / "o"
    names = [*REFINABLE, *(f"{b}+sc" for b in REFINABLE)]
    assert main(["run", "--methods", ",".join(names), "--protocol", "smoke", "--out", str(out), "--no-progress",
                 "--no-report"]) == 0
    printed = capsys.readouterr()
    lines = (printed.out + printed.err).splitlines()
    assert len(lines) > 8 * 5 and max(map(len, lines)) <= 100, [line for line in lines if len(line) > 100]
    with sqlite3.connect(out / "results.db") as con:
        stored = dict(con.execute("SELECT r.method, COUNT(m.value) FROM runs r JOIN metrics m USING (run_id) "
                                  "WHERE r.status = 'done' GROUP BY r.method").fetchall())
    assert set(stored) == set(names) and min(stored.values()) >= 10, stored


def test_refinement_without_base_run_is_a_user_error(tmp_path, capsys):
    assert main(["run", "--methods", "faae+sc", "--protocol", "smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "python -m bench run --methods faae " in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything was trained or written


@pytest.mark.soak  # base and refinement trained in one command: in CI's second step
def test_base_and_refinement_in_one_command(tmp_path, tmp_cache):
    import sqlite3

    out = tmp_path / "o"
    args = ["run", "--methods", "faae,faae+sc", "--protocol", "smoke", "--out", str(out), "--no-progress",
            "--metrics", "mse", "--set", "train.max_steps=2"]
    assert main(args) == 0
    with sqlite3.connect(out / "results.db") as con:
        rows = dict(con.execute("SELECT r.method, m.value FROM metrics m JOIN runs r USING (run_id) "
                                "WHERE m.key = 'recon_mse'").fetchall())
        assert set(rows) == {"faae", "faae+sc"}
    assert rows["faae+sc"] <= rows["faae"] * 1.001
