"""Latent re-encoding: how well E inverts G, one definition for every method.

For prior draws z_i and their re-encodings E(G(z_i)) mapped onto the prior's support, z^_i = P(E(G(z_i))) (the
sphere: normalised; the uniform box: clamped; the Gaussian: as it is), the suite reports

- reencode_error = mean_i ||z_i - z^_i||^2, in the prior's space, whatever the method's encoder outputs;
- reencode_ratio = reencode_error / mean_{i != j} ||z_i - z^_j||^2: the error of the true pairs over the error of
  the same codes paired at random. 0 is perfect inversion; 1 means E(G(z)) carries no information on z: a constant
  or collapsed encoder scores exactly 1 (every pairing is as good as the true one), whatever its scale, so a
  method cannot score well by shrinking its codes;
- reencode_angle_deg = mean angle between z_i and z^_i (90 degrees for unrelated directions).
"""

from __future__ import annotations

import torch

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue, not_available

SPACE = "the prior's support: P(E(G(z))) with P the prior's projection (sphere: normalise, uniform: clamp)"


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row angle in degrees between latent vectors a and b (N x D), in [0, 180]. Zero vectors give 90."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def shuffled_pair_sq_dist(z: torch.Tensor, z_hat: torch.Tensor) -> float:
    """mean over i != j of ||z_i - z^_j||^2, in closed form (no N x N matrix): every wrong pairing, averaged."""
    z, z_hat = z.double(), z_hat.double()
    n = len(z)
    all_pairs = n * z.pow(2).sum() + n * z_hat.pow(2).sum() - 2 * z.sum(0).dot(z_hat.sum(0))
    true_pairs = (z - z_hat).pow(2).sum()
    return ((all_pairs - true_pairs) / (n * (n - 1))).item()


def reencoding(z: torch.Tensor, z_hat: torch.Tensor) -> dict[str, float]:
    """The three values for prior draws z and projected re-encodings z_hat (both N x D, N >= 2)."""
    err = (z.double() - z_hat.double()).pow(2).sum(1).mean().item()
    chance = shuffled_pair_sq_dist(z, z_hat)
    return {"reencode_error": err, "reencode_ratio": err / chance if chance > 0 else float("nan"),
            "reencode_angle_deg": angle_deg(z, z_hat).mean().item(), "shuffled_pair_error": chance}


@METRICS.register()
class Reencoding(Metric):
    name = "reencode"
    description = ("re-encoding error E||z - P(E(G(z)))||^2 on the prior's support, its ratio to the same codes "
                   "paired at random (1 = no inversion), and the mean angle between z and E(G(z)) in degrees")
    requires = frozenset({"encode", "decode", "sample"})
    keys = {"reencode_error": LOWER, "reencode_ratio": LOWER, "reencode_angle_deg": LOWER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        z, z_raw = ctx.prior_codes()
        if len(z) < 2:
            return not_available(self.keys, f"needs at least 2 prior draws (eval.n_samples = {len(z)})")
        v = reencoding(z, m.prior.project(z_raw))
        prov = {**ctx.base_provenance(), "split": "prior", "n_latents": len(z), "prior": m.spec.prior,
                "latent_dim": m.spec.latent_dim, "space": SPACE,
                "reference": "mean over i != j of ||z_i - P(E(G(z_j)))||^2 (the same codes paired at random)"}
        ratio_prov = {**prov, "shuffled_pair_error": v["shuffled_pair_error"]}
        # independent directions in high dimension are almost orthogonal: 90 degrees is "no recovery"
        angle_prov = {**prov, "reference": "90 deg for unrelated directions", "unit": "degrees",
                      "reduction": "mean over latents"}
        return [MetricValue("reencode_error", v["reencode_error"], prov),
                MetricValue("reencode_ratio", v["reencode_ratio"], ratio_prov),
                MetricValue("reencode_angle_deg", v["reencode_angle_deg"], angle_prov)]
