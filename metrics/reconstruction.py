"""Pixel reconstruction error of held-out images, next to the random-pair baseline."""

from __future__ import annotations

import torch

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue, not_available


def per_image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).flatten(1).pow(2).mean(1)


@METRICS.register()
class ReconstructionMSE(Metric):
    """MSE of G(E(x)) against x in [0, 1] on held-out images. The baseline pairs each image with the
    reconstruction of a different random held-out image: a method must beat it to reconstruct at all."""

    name = "mse"
    description = "reconstruction MSE on held-out images (pixels in [0,1]) and the random-pair baseline"
    requires = frozenset({"encode", "decode"})
    keys = {"recon_mse": LOWER, "recon_mse_random_pair": LOWER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        x = ctx.test_images()
        rec = ctx.reconstructions()
        real = x.float() / 255
        mse = per_image_mse(rec, real)
        n = len(x)
        prov = {**ctx.base_provenance(), "n_images": n, "pixel_range": "[0,1]", "reduction": "mean over pixels"}
        if n < 2:  # one image has no other to pair with: the baseline would be recon_mse itself
            return [MetricValue("recon_mse", float(mse.mean()), prov),
                    *not_available(["recon_mse_random_pair"], f"the random-pair baseline needs at least 2 held-out "
                                                              f"images, got {n}")]
        # a derangement: every image is paired with another image's reconstruction
        perm = torch.randperm(n, generator=ctx.generator())
        perm = torch.where(perm == torch.arange(n), (perm + 1) % n, perm)
        baseline = per_image_mse(rec[perm], real)
        return [MetricValue("recon_mse", float(mse.mean()), prov),
                MetricValue("recon_mse_random_pair", float(baseline.mean()), prov)]
