"""Sharpness as the variance of the Laplacian, relative to the real held-out images.

The paper's central qualitative claim is that F-AAE's reconstructions and samples are sharper than AAE's
"overly smoothened" ones; this puts a number on it. Blur removes high frequencies, which the Laplacian
measures, so a blurred image has a smaller Laplacian variance (Pech-Pacheco et al. 2000). The ratio is
1 for images as sharp as the real ones; noise pushes it above 1 (the paper itself says F-AAE's reconstructions
"contain some noise and artifacts"), so the keys are read as closeness to 1, |ln ratio|: 3.0 is as far off as 1/3.

Implementation: a fixed 3x3 four-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] (scikit-image's
`filters.laplace` with ksize=3 up to sign) applied by torch on the interior pixels only (no padding, so
borders add nothing), on luminance Y = 0.2125 R + 0.7154 G + 0.0721 B (scikit-image's `rgb2gray`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CLOSEST_TO_1, METRICS, EvalContext, Metric, MetricValue, lacking

LAPLACE_3X3 = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
#: ITU-R BT.709 luma weights, as skimage.color.rgb2gray
LUMA = (0.2125, 0.7154, 0.0721)
IMPLEMENTATION = "variance of 3x3 four-neighbour Laplacian (torch conv2d, interior pixels) on luminance"


def luminance(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luminance in [0, 1] of float N x C x H x W images (C = 1 passes through)."""
    x = x.double()
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"luminance needs 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def laplacian_variance(x: torch.Tensor) -> torch.Tensor:
    """Per-image variance of the Laplacian of the luminance of float N x C x H x W images in [0, 1]."""
    y = luminance(x)
    lap = F.conv2d(y, LAPLACE_3X3.to(y.device).view(1, 1, 3, 3))
    return lap.flatten(1).var(1, unbiased=False).cpu()


def sharpness(x: torch.Tensor) -> float:
    """Mean per-image Laplacian variance of a set of images."""
    return float(laplacian_variance(x).mean())


@METRICS.register()
class Sharpness(Metric):
    name = "sharpness"
    description = ("variance of the Laplacian of reconstructions and of samples, each relative to the real "
                   "held-out images (1 = as sharp as real)")
    # each key needs its own capabilities (see `lacking`), so a method with decode only still gets samples
    requires = frozenset({"decode"})
    keys = {"recon_sharpness_ratio": CLOSEST_TO_1, "sample_sharpness_ratio": CLOSEST_TO_1}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        x = ctx.test_images()
        real = sharpness(x.float() / 255)
        base = {**ctx.base_provenance(), "implementation": IMPLEMENTATION, "luma": list(LUMA),
                "n_real": len(x), "real_laplacian_var": real}
        if real == 0:  # flat test images: no edges to compare against
            return [MetricValue(k, None, {"reason": "the real images have no edges (zero Laplacian variance)"})
                    for k in self.keys]
        out = []
        reason = lacking(ctx, {"encode", "decode"})
        if reason:
            out.append(MetricValue("recon_sharpness_ratio", None, {"reason": reason}))
        else:
            rec = sharpness(ctx.reconstructions().clamp(0, 1))
            out.append(MetricValue("recon_sharpness_ratio", rec / real,
                                   {**base, "n_images": len(x), "laplacian_var": rec}))
        reason = lacking(ctx, {"sample", "decode"})
        if reason:
            out.append(MetricValue("sample_sharpness_ratio", None, {"reason": reason}))
        else:
            z = m.prior.sample(ctx.n_samples, m.spec.latent_dim, generator=ctx.generator(2))
            smp = sharpness(ctx.map_batches(m.decode, z).clamp_(0, 1))
            out.append(MetricValue("sample_sharpness_ratio", smp / real,
                                   {**base, "split": "prior samples vs test", "n_samples": len(z),
                                    "laplacian_var": smp}))
        return out
