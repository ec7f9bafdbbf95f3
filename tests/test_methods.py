"""Every registered method, through the registry: one step of every phase on a tiny input."""

from __future__ import annotations

import pytest
import torch

from bench.runs.step import phase_backward
from methods import METHODS, ModelSpec, StepContext

TRAINABLE = [n for n in METHODS if METHODS.get(n).phases]
SHAPES = [(3, 32), (1, 32), (3, 64)]


def tiny(name: str, channels: int, resolution: int, prior: str = "sphere"):
    """A width-8 model with the method's smoke-protocol hyper-parameters (e.g. a short latent search)."""
    cls = METHODS.get(name)
    torch.manual_seed(0)
    params = cls.resolve_params(getattr(cls, "protocol_params", {}).get("smoke", {}))
    return cls(ModelSpec(channels, resolution, latent_dim=16, width=8, prior=prior), params)


@pytest.mark.parametrize("channels,resolution", SHAPES)
@pytest.mark.parametrize("name", TRAINABLE)
def test_every_phase_one_step(name, channels, resolution):
    m = tiny(name, channels, resolution)
    x = torch.rand(4, channels, resolution, resolution)
    ctx = StepContext(step=0, epoch=0, rec_weight=100.0, adv_weight=0.1, generator=torch.Generator().manual_seed(0))
    for phase in type(m).phases:
        m.zero_grad(set_to_none=True)
        losses = phase_backward(m, phase, x, ctx, torch.device("cpu"), "fp32")
        assert all(torch.isfinite(v).all() for v in losses.values()), (phase.name, losses)
        expected = {id(p) for p in m.phase_parameters(phase)}
        got = {id(p) for p in m.parameters() if p.grad is not None}
        assert got == expected, f"{name}/{phase.name}: gradients reached other parameters or missed some"
        assert any(p.grad.abs().sum() > 0 for p in m.phase_parameters(phase))
        opt = torch.optim.Adam(m.phase_parameters(phase), lr=1e-3)
        opt.step()


@pytest.mark.parametrize("name", TRAINABLE)
def test_capabilities_shapes_and_range(name):
    m = tiny(name, 3, 32).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        if "encode" in m.provides:
            z = m.encode(x)
            assert z.shape == (5, 16)
        if "sample" in m.provides:
            s = m.sample(5, torch.Generator().manual_seed(0))
            assert s.shape == (5, 3, 32, 32) and s.min() >= 0 and s.max() <= 1
        if {"encode", "decode"} <= m.provides:
            r = m.reconstruct(x)
            assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1


@pytest.mark.parametrize("prior", ["sphere", "gaussian", "uniform"])
def test_priors(prior):
    m = tiny("faae", 1, 32, prior)
    z = m.sample_prior(2000, torch.Generator().manual_seed(0))
    if prior == "sphere":
        assert torch.allclose(z.norm(dim=1), torch.ones(2000), atol=1e-5)
        # the whole sphere, not one orthant
        assert (z < 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    if prior == "uniform":
        assert z.abs().max() <= 1
    scale = m.prior.expected_pair_sq_dist(16)
    measured = (z[:1000] - z[1000:]).pow(2).sum(1).mean().item()
    assert measured == pytest.approx(scale, rel=0.1)


def test_a_phase_without_its_loss_method_is_refused_at_class_definition():
    from methods.base import Method, Phase

    with pytest.raises(TypeError, match="recon_loss"):
        type("NoLoss", (Method,), {"phases": (Phase("recon", ("E", "G")),)})
