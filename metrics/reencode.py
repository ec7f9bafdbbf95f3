"""Latent re-encoding error E||z - E(G(z))||^2, read against E||z - z'||^2 for independent prior draws,
and the angle between z and E(G(z)) (the error that matters on the sphere, where norms are fixed)."""

from __future__ import annotations

import torch

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row angle in degrees between latent vectors a and b (N x D), in [0, 180]; scale-free, so an
    un-normalised encoder output is compared by its direction only. Zero vectors give 90."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


@METRICS.register()
class Reencoding(Metric):
    name = "reencode"
    description = ("re-encoding error E||z - E(G(z))||^2 (sum over latent dims), its ratio to E||z - z'||^2, "
                   "and the mean angle between z and E(G(z)) in degrees")
    requires = frozenset({"encode", "decode", "sample"})
    keys = {"reencode_error": LOWER, "reencode_ratio": LOWER, "reencode_angle_deg": LOWER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        n = ctx.n_samples
        z, z_hat = ctx.prior_codes()
        err = (z - z_hat).pow(2).sum(1).mean().item()
        scale = m.prior.expected_pair_sq_dist(m.spec.latent_dim)
        angle = angle_deg(z, z_hat).mean().item()
        prov = {**ctx.base_provenance(), "split": "prior", "n_latents": n, "prior": m.spec.prior,
                "latent_dim": m.spec.latent_dim, "reference": f"E||z-z'||^2 = {scale:g}"}
        # independent directions in high dimension are almost orthogonal: 90 degrees is "no recovery"
        angle_prov = {**prov, "reference": "90 deg for unrelated directions", "unit": "degrees",
                      "reduction": "mean over latents"}
        return [MetricValue("reencode_error", err, prov), MetricValue("reencode_ratio", err / scale, prov),
                MetricValue("reencode_angle_deg", angle, angle_prov)]
