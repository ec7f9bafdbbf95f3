"""LPIPS (Zhang et al. 2018, the `lpips` package) between held-out images x and their reconstructions G(E(x)).

`lpips_distance(a, b, net)` is the pairwise stage function, used by the metric and by `bench score`. It takes
pixels in [0, 1] (the project's convention) and hands lpips the [-1, 1] range lpips expects; feeding lpips
[0, 1] or [0, 255] pixels is a frequent bug in the field that gives plausible-looking but wrong numbers, so the
range is checked on the way in and asserted on the model's input. One-channel images are repeated to three.
The backbones (AlexNet by default, VGG16 selectable) come from metrics.weights, never from a silent download.
"""

from __future__ import annotations

import functools
import warnings
from importlib import metadata
from pathlib import Path

import torch

from bench.core.device import exact_fp32

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue, metric_options
from .weights import Weights, lpips_weights

LPIPS_NETS = ("alex", "vgg")
DEFAULT_NET = "alex"
#: smallest side lpips' AlexNet accepts (its second max-pool needs a 3x3 map); VGG is held to the same bound
MIN_SIZE = 32
#: slack for [0, 1] inputs (bf16 reconstructions can land a hair outside) before they count as out of range
RANGE_TOL = 1e-3


def lpips_version() -> str:
    return metadata.version("lpips")


@functools.cache
def _model(net: str, path: str, device: str) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained` argument inside lpips
        model = lpips.LPIPS(net=net, pnet_rand=True, model_path=path, verbose=False)
    model.eval().requires_grad_(False).to(device)

    def check_range(_module, inputs):
        # what reaches lpips must be in [-1, 1]: the one place where a wrong convention would slip through
        for t in inputs[:2]:
            if t.numel() and not (t.min() >= -1 and t.max() <= 1):
                raise AssertionError(f"LPIPS input outside [-1, 1]: [{t.min().item():.3g}, {t.max().item():.3g}]")

    model.register_forward_pre_hook(check_range)
    return model


def lpips_model(net: str = DEFAULT_NET, device: str | torch.device = "cpu",
                cache_dir: str | Path | None = None) -> tuple[torch.nn.Module, Weights]:
    """The lpips.LPIPS model for `net` with its verified weights (loaded once per process and device)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; valid: {', '.join(LPIPS_NETS)}")
    w = lpips_weights(net, cache_dir)
    return _model(net, str(w.path), str(torch.device(device))), w


def to_lpips_range(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (floats) or uint8 -> floats in [-1, 1] with three channels."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected N x C x H x W images with 1 or 3 channels, got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    else:
        x = x.float()
        lo, hi = x.min().item(), x.max().item()
        if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
            raise ValueError(f"LPIPS takes pixels in [0, 1] here (it maps them to [-1, 1]); got values in "
                             f"[{lo:.3g}, {hi:.3g}]. Divide 0-255 images by 255 or pass uint8.")
        x = x.clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x * 2 - 1


@torch.no_grad()
def lpips_distance(a: torch.Tensor, b: torch.Tensor, net: str = DEFAULT_NET, batch_size: int = 64,
                   device: str | torch.device = "cpu", cache_dir: str | Path | None = None) -> torch.Tensor:
    """Per-image LPIPS between a and b (N x C x H x W, pixels in [0, 1] or uint8), fp32, on the CPU."""
    if a.shape != b.shape:
        raise ValueError(f"LPIPS compares images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < MIN_SIZE:
        raise ValueError(f"images of {a.shape[-2]}x{a.shape[-1]} are too small for LPIPS (needs >= {MIN_SIZE})")
    model, _ = lpips_model(net, device, cache_dir)
    out = []
    with exact_fp32():  # the published distances are fp32: no TF32 convolutions on Ampere+ GPUs
        for i in range(0, len(a), batch_size):
            x = to_lpips_range(a[i : i + batch_size]).to(device)
            y = to_lpips_range(b[i : i + batch_size]).to(device)
            out.append(model(x, y).flatten().float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@METRICS.register()
class LPIPS(Metric):
    """Mean LPIPS between held-out x and G(E(x)). Reconstructions are clamped to [0, 1], as saving them as images
    would. Option `net`: "alex" (default) or "vgg", given to the constructor or as ctx.extras["metric_options"]."""

    name = "lpips"
    description = "LPIPS (alex; net=vgg selectable) between held-out x and G(E(x)), inputs mapped to [-1,1]"
    requires = frozenset({"encode", "decode"})
    keys = {"lpips": LOWER}
    default = False  # needs pretrained weights (fetched on first use): see EvalConfig.pretrained

    def __init__(self, net: str | None = None):
        self.net = net

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        net = self.net or metric_options(ctx, self.name).get("net", DEFAULT_NET)
        x = ctx.test_images()
        rec = ctx.reconstructions().clamp(0, 1)
        d = lpips_distance(rec, x, net=net, batch_size=ctx.batch_size, device=ctx.device)
        _, w = lpips_model(net, ctx.device)
        prov = {**ctx.base_provenance(), "lpips": lpips_version(), "net": net, "tf32": False, **w.provenance(),
                "n_images": len(x), "input_range": "[-1,1]", "lpips_dtype": "fp32", "version": "0.1"}
        return [MetricValue("lpips", float(d.mean()), prov)]
