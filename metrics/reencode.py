"""Latent re-encoding error E||z - E(G(z))||^2, read against E||z - z'||^2 for independent prior draws."""

from __future__ import annotations

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue


@METRICS.register()
class Reencoding(Metric):
    name = "reencode"
    description = "re-encoding error E||z - E(G(z))||^2 (sum over latent dims) and its ratio to E||z - z'||^2"
    requires = frozenset({"encode", "decode", "sample"})
    keys = {"reencode_error": LOWER, "reencode_ratio": LOWER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        n = ctx.n_samples
        z = m.prior.sample(n, m.spec.latent_dim, generator=ctx.generator(1))
        z_hat = ctx.map_batches(lambda zz: m.encode(m.decode(zz)), z)
        err = (z - z_hat).pow(2).sum(1).mean().item()
        scale = m.prior.expected_pair_sq_dist(m.spec.latent_dim)
        prov = {**ctx.base_provenance(), "split": "prior", "n_latents": n, "prior": m.spec.prior,
                "latent_dim": m.spec.latent_dim, "reference": f"E||z-z'||^2 = {scale:g}"}
        return [MetricValue("reencode_error", err, prov), MetricValue("reencode_ratio", err / scale, prov)]
