"""PSNR and SSIM of reconstructions G(E(x)) against held-out x, computed by scikit-image per image.

`psnr` and `ssim` are the pairwise stage functions (also used by `bench score`); the metric averages their
per-image values. SSIM uses Wang et al.'s (2004) settings, as scikit-image's documentation gives them:
an 11x11 Gaussian window with sigma 1.5 and population covariances.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .base import HIGHER, METRICS, EvalContext, Metric, MetricValue

#: Wang et al.'s SSIM (scikit-image's defaults are a 7x7 uniform window instead)
SSIM_SETTINGS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _pairs(a: torch.Tensor, b: torch.Tensor):
    """Per-image numpy pairs, channels last (H x W for one channel); inputs N x C x H x W in [0, 1]."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two N x C x H x W tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a64 = a.detach().to("cpu", torch.float64).numpy()
    b64 = b.detach().to("cpu", torch.float64).numpy()
    for x, y in zip(a64, b64):
        if x.shape[0] == 1:
            yield x[0], y[0]
        else:
            yield np.moveaxis(x, 0, -1), np.moveaxis(y, 0, -1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of a against the reference b (float N x C x H x W in [0, 1], data range 1).
    Identical images give +inf (zero error), as in scikit-image, without its division warning."""
    out = []
    with np.errstate(divide="ignore"):
        for x, y in _pairs(a, b):
            out.append(peak_signal_noise_ratio(y, x, data_range=1.0))
    return torch.tensor(out, dtype=torch.float64)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of a and b (float N x C x H x W in [0, 1], data range 1; RGB over channel_axis,
    averaged over channels). Images must be at least 11 pixels on a side (the Gaussian window)."""
    out = []
    for x, y in _pairs(a, b):
        axis = -1 if x.ndim == 3 else None
        out.append(structural_similarity(y, x, data_range=1.0, channel_axis=axis, **SSIM_SETTINGS))
    return torch.tensor(out, dtype=torch.float64)


def skimage_version() -> str:
    return metadata.version("scikit-image")


@METRICS.register()
class ImageQuality(Metric):
    name = "image_quality"
    description = "PSNR (dB) and SSIM (Wang et al. settings) of G(E(x)) vs held-out x, by scikit-image, mean over images"
    requires = frozenset({"encode", "decode"})
    keys = {"recon_psnr": HIGHER, "recon_ssim": HIGHER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        x = ctx.test_images()
        real = x.float() / 255
        # outputs can leave [0, 1] by a rounding step under bf16; both scores assume data range 1
        rec = ctx.reconstructions().clamp(0, 1)
        p, s = psnr(rec, real), ssim(rec, real)
        prov = {**ctx.base_provenance(), "n_images": len(x), "implementation": "skimage.metrics",
                "skimage_version": skimage_version(), "data_range": 1.0, "reduction": "mean over images",
                "pixel_range": "[0,1], reconstructions clamped"}
        return [
            MetricValue("recon_psnr", float(p.mean()), {**prov, "function": "peak_signal_noise_ratio",
                                                        "identical_images": int(torch.isinf(p).sum())}),
            MetricValue("recon_ssim", float(s.mean()), {**prov, "function": "structural_similarity",
                                                        **SSIM_SETTINGS, "channel_axis": "RGB averaged"}),
        ]
