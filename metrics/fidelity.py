"""FID and KID through torch-fidelity: generated samples G(z) and reconstructions G(E(x)) against the test split.

Stages: images (uint8 tensors, no file round trip) -> Inception pool3 features (torch-fidelity, with the weights
of metrics.weights) -> statistics -> value. The reference side (the test split) is cached by torch-fidelity's own
cache, keyed by dataset, split, resolution, image count, a digest of the images, the weights digest and the
feature extractor.

Two feature extractors give the same features up to bf16 rounding:
- "fp32": torch-fidelity's own `inception-v3-compat`, exactly as `fidelity --fid` runs it;
- "bf16": `InceptionV3BF16` below, the same network and weights for CPUs and GPUs with fast bf16 (AMX,
  AVX512-BF16, tensor cores): BatchNorm folded into the convolutions (in fp32), weights and activations in bf16
  except the first (cheap) convolution, channels_last, bigger batches, and torch-fidelity's TF1-compatible
  bilinear resize to 299x299 written as two fp32 matrix products taken from torch-fidelity's own function.
  benchmarks/test_fid_speed.py measures its speed and its FID against fp32's (about 3x, FID within 0.5%).
  Pool3 features differ from fp32's by ~3% (bf16 rounding of the weights is most of it); FID, a statistic over
  many images, by a few tenths of a percent.
The dtype follows the evaluation's precision (EvalContext.precision) unless a metric option says otherwise.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3
from torch_fidelity.helpers import vassert
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from bench.registry import Registry

from .base import LOWER, METRICS, EvalContext, Metric, MetricValue, not_available
from .lpips_metric import metric_options
from .weights import Weights, inception_weights

FAST_EXTRACTOR = "aegan-inception-v3-bf16"
#: KID's subset size: torch-fidelity's 1000, or all images when there are fewer
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
IMAGE_FORMAT = "uint8 tensors (x*255+0.5 truncated, as torchvision's save_image), no file round trip"
RESIZE = "torch-fidelity's TF1-compatible bilinear resize to 299x299"


class InceptionV3BF16(FeatureExtractorInceptionV3):
    """torch-fidelity's inception-v3-compat in bf16 (see the module docstring); pool3 ("2048") features only."""

    _TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list, **kwargs)  # builds the network and loads the weights (strict)
        for block in self.modules():
            if isinstance(block, BasicConv2d):
                # conv -> bn -> relu becomes conv(+bias) -> relu: one pass less over every activation map
                block.conv = fuse_conv_bn_eval(block.conv.float(), block.bn.float())
                block.bn = torch.nn.Identity()
        del self.fc  # pool3 features only
        self.to(torch.bfloat16).to(memory_format=torch.channels_last)
        # the first convolution stays fp32: it is cheap (3 input channels) and bf16 input pixels cost precision
        # (measured: mean feature error 3.5% -> 2.9% against fp32)
        self.Conv2d_1a_3x3.float()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
        x = resize_like_tf1(x.float(), self.INPUT_IMAGE_SIZE)
        x = ((x - 128) / 128).contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_1a_3x3(x).to(torch.bfloat16)
        for name in self._TRUNK[1:]:
            x = getattr(self, name)(x)
        return (x.float().mean((2, 3)),)

    @staticmethod
    def get_provided_features_list():
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "2048", "kid": "2048", "prc": "2048"}[metric]

    @staticmethod
    def can_be_compiled():
        return False


@functools.cache
def _resize_matrix(n_in: int, n_out: int, device: str) -> torch.Tensor:
    """n_out x n_in matrix of torch-fidelity's TF1 bilinear resize along one axis (it is separable)."""
    basis = torch.eye(n_in).view(n_in, 1, n_in, 1)  # image i is one-hot on row i
    rows = interpolate_bilinear_2d_like_tensorflow1x(basis, size=(n_out, 1), align_corners=False)
    return rows[:, 0, :, 0].T.contiguous().to(device)


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """torch-fidelity's interpolate_bilinear_2d_like_tensorflow1x(x, (size, size)) as R_h @ x @ R_w^T (fp32)."""
    rh = _resize_matrix(x.shape[-2], size, str(x.device))
    rw = _resize_matrix(x.shape[-1], size, str(x.device))
    return rh @ x @ rw.T


if FAST_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:  # importing twice (e.g. reloads) must not fail
    torch_fidelity.register_feature_extractor(FAST_EXTRACTOR, InceptionV3BF16)

#: dtype -> (torch-fidelity feature extractor, batch size): bf16 is faster with bigger batches (measured)
EXTRACTORS: Registry[tuple[str, int]] = Registry("FID dtype")
EXTRACTORS.add("fp32", ("inception-v3-compat", 64))
EXTRACTORS.add("bf16", (FAST_EXTRACTOR, 128))


class UInt8Images(torch.utils.data.Dataset):
    """uint8 N x C x H x W images as torch-fidelity's Dataset input; one channel is repeated to three."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 N x 1|3 x H x W images, got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8, rounding as torchvision's save_image does (so a PNG round trip is lossless)."""
    return x.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def torch_fidelity_version() -> str:
    return metadata.version("torch-fidelity")


def images_digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def fid_kid(images1: torch.Tensor, images2: torch.Tensor, *, weights: Weights | None = None, dtype: str = "bf16",
            device: torch.device | str = "cpu", batch_size: int | None = None, seed: int = 0,
            cache_name2: str | None = None, cache_root: str | Path | None = None,
            fid: bool = True, kid: bool = True) -> dict[str, Any]:
    """FID and KID between two sets of uint8 N x C x H x W images, through torch_fidelity.calculate_metrics.
    fid/kid=False skips one (FID's 2048x2048 eigenvalue problem costs seconds on a CPU).

    cache_name2: a name under which torch-fidelity caches the features and statistics of images2 (the
    reference); it must identify the images, the weights and the dtype's extractor is added by torch-fidelity.
    """
    extractor, default_bs = EXTRACTORS.get(dtype)
    n1, n2 = len(images1), len(images2)
    if min(n1, n2) < 2:
        raise ValueError(f"FID and KID need at least 2 images on each side, got {n1} and {n2}")
    weights = weights or inception_weights()
    device = torch.device(device)
    kid_subset = min(KID_SUBSET_SIZE, n1, n2)
    if cache_root is None and cache_name2:
        from bench.data import cache_dir

        cache_root = cache_dir() / "fidelity"
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(images1), input2=UInt8Images(images2), fid=fid, kid=kid,
        feature_extractor=extractor, feature_extractor_weights_path=str(weights.path),
        cuda=device.type == "cuda", batch_size=batch_size or default_bs, save_cpu_ram=True, verbose=False,
        kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset, rng_seed=seed,
        cache=cache_name2 is not None, cache_root=str(cache_root) if cache_root else None,
        input2_cache_name=cache_name2)
    def get(key: str) -> float | None:
        return float(out[key]) if key in out else None

    return {"fid": get("frechet_inception_distance"), "kid": get("kernel_inception_distance_mean"),
            "kid_std": get("kernel_inception_distance_std"), "kid_subset_size": kid_subset,
            "feature_extractor": extractor}


def provenance(weights: Weights, dtype: str, device: torch.device, n1: int, n2: int, scores: dict[str, Any],
               seed: int) -> dict[str, Any]:
    return {"torch_fidelity": torch_fidelity_version(), **weights.provenance(),
            "feature_extractor": scores["feature_extractor"], "dtype": dtype, "device": device.type, "seed": seed,
            "n_images_1": n1, "n_images_2": n2, "resize": RESIZE, "image_format": IMAGE_FORMAT,
            "kid_subsets": KID_SUBSETS, "kid_subset_size": scores["kid_subset_size"]}


class _Fidelity(Metric):
    """FID and KID of some images of the method (images()) against the first n_images of the test split."""

    default = False  # needs pretrained weights (fetched on first use): see EvalConfig.pretrained
    side = ""

    def __init__(self, dtype: str | None = None):
        self.dtype = dtype

    def images(self, ctx: EvalContext) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        dtype = self.dtype or metric_options(ctx, self.name).get("dtype") or ctx.precision
        EXTRACTORS.get(dtype)  # an unknown dtype fails before any work
        ref = ctx.test_images()
        if len(ref) < 2:  # FID's covariance and KID's subsets need two images on each side
            return not_available(self.keys, f"FID and KID need at least 2 held-out images, got {len(ref)}")
        gen = to_uint8(self.images(ctx).clamp(0, 1))
        if len(gen) < 2:
            return not_available(self.keys, f"FID and KID need at least 2 {self.side} images, got {len(gen)}")
        weights = inception_weights()
        cache_name = (f"{ctx.data.name}-test-r{ctx.data.resolution}-n{len(ref)}-x{images_digest(ref)[:12]}"
                      f"-w{weights.sha256[:12]}")
        scores = fid_kid(gen, ref, weights=weights, dtype=dtype, device=ctx.device, seed=ctx.seed,
                         cache_name2=cache_name)
        prov = {**ctx.base_provenance(), **provenance(weights, dtype, ctx.device, len(gen), len(ref), scores,
                                                      ctx.seed),
                "generator_dtype": ctx.precision, "images_1": self.side, "reference_split": "test",
                "n_generated": len(gen), "n_reference": len(ref)}
        return [MetricValue(f"fid_{self.side}", scores["fid"], prov),
                MetricValue(f"kid_{self.side}", scores["kid"], {**prov, "kid_std": scores["kid_std"]})]


@METRICS.register()
class FIDSamples(_Fidelity):
    name = "fid"
    description = "FID and KID of n_samples generated G(z) against the test split (torch-fidelity, Inception-v3)"
    requires = frozenset({"sample"})
    keys = {"fid_samples": LOWER, "kid_samples": LOWER}
    side = "samples"

    @torch.no_grad()
    def images(self, ctx: EvalContext) -> torch.Tensor:
        # the method's own sampler, in batches drawn from one seeded generator: the same samples every time
        g, n, out = ctx.generator(2), ctx.n_samples, []
        for i in range(0, n, ctx.batch_size):
            with ctx.autocast():
                out.append(ctx.method.sample(min(ctx.batch_size, n - i), g).float().cpu())
        return torch.cat(out)


@METRICS.register()
class FIDRecon(_Fidelity):
    name = "fid_recon"
    description = "FID and KID of reconstructions G(E(x)) of the test split against the test split"
    requires = frozenset({"encode", "decode"})
    keys = {"fid_recon": LOWER, "kid_recon": LOWER}
    side = "recon"

    def images(self, ctx: EvalContext) -> torch.Tensor:
        return ctx.reconstructions()
