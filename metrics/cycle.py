"""Cycle consistency in image space: does decoding the re-encoded latent give back the same sample?"""

from __future__ import annotations

import torch

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue
from .reconstruction import per_image_mse


@METRICS.register()
class CycleMSE(Metric):
    """||G(z) - G(E(G(z)))||^2 per pixel for prior draws z (the same draws as `reencode`). Unlike the
    latent re-encoding error it is blind to latent directions G ignores, and it is in the units of
    `recon_mse`, so the two read side by side: real images vs the model's own samples."""

    name = "cycle"
    description = "image-space cycle error ||G(z) - G(E(G(z)))||^2, mean per pixel in [0,1], on prior draws"
    requires = frozenset({"encode", "decode", "sample"})
    keys = {"cycle_mse": LOWER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        n = ctx.n_samples
        z, z_hat = ctx.prior_codes()
        d = z.shape[1]

        def cycle(pair):  # G(z) against G(E(G(z))), from the shared re-encodings
            return per_image_mse(m.decode(pair[:, d:]), m.decode(pair[:, :d]))

        err = ctx.map_batches(cycle, torch.cat([z, z_hat], 1))
        prov = {**ctx.base_provenance(), "split": "prior", "n_latents": n, "prior": m.spec.prior,
                "pixel_range": "[0,1]", "reduction": "mean over pixels, then over latents"}
        return [MetricValue("cycle_mse", float(err.mean()), prov)]
