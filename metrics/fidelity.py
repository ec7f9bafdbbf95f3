"""FID, KID, precision/recall and density/coverage on Inception features: generated samples G(z) and
reconstructions G(E(x)) against the test split.

Stages: images (uint8 tensors, no file round trip) -> Inception pool3 features -> statistics -> value. Every
statistic is torch-fidelity's own function (FID, KID with its defaults: 100 subsets of up to 1,000 images,
seed 2020; precision/recall with k=3) or the `prdc` package's (density/coverage, Naeem et al., k=5), applied to
one set of features per image set: the test split's features are extracted once per (dataset, split digest,
image count, weights, extractor) and cached on disk; a run's samples and reconstructions once per evaluation.

Feature modes (FEATURES):
- "fp32" (default, exact): torch-fidelity's `inception-v3-compat` network and weights with BatchNorm folded into
  the convolutions and channels_last layout, still fp32: features equal torch-fidelity's to ~1e-6 (relative), so
  the values equal `torch_fidelity.calculate_metrics` on the same images (tests/test_fidelity.py checks FID to
  0.1% and KID to 1% on real images) at about twice its speed on a CPU (benchmarks/test_fid_speed.py).
- "bf16" (approximate, opt-in): the same network in bf16 (weights and activations, fp32 first convolution).
  About 3x torch-fidelity on CPUs with fast bf16, but FID moves by a few tenths of a percent: its provenance says
  `feature_mode: approximate`, so reports and compare never put its values in one column with exact ones.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import prdc
import torch
import torch_fidelity
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3
from torch_fidelity.helpers import vassert
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from bench.core.data import cache_dir, tensor_digest
from bench.core.device import exact_fp32
from bench.core.registry import Registry
from bench.core.tempfiles import atomic_write

from .base import (
    CLOSEST_TO_1,
    HIGHER,
    LOWER,
    METRICS,
    EvalContext,
    Metric,
    MetricValue,
    metric_options,
    not_available,
)
from .weights import Weights, inception_weights

#: torch-fidelity's defaults, so that KID is comparable with `fidelity --kid` (subset size capped at the image count)
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
KID_SEED = 2020
#: neighbourhoods: torch-fidelity's default for precision/recall, Naeem et al.'s recommendation for density/coverage
PRC_K = 3
PRDC_K = 5
IMAGE_FORMAT = "uint8 tensors (x*255+0.5 truncated, as torchvision's save_image), no file round trip"
RESIZE = "torch-fidelity's TF1-compatible bilinear resize to 299x299"
FEATURE_LAYER = "2048"
#: what precision/recall and density/coverage equal, in the exact feature mode. torch-fidelity's own `prc` defaults to
#: VGG-16 features: values on those are not comparable with these
PRC_COMPARABLE = (f"torch-fidelity's precision/recall with k={PRC_K} on Inception pool3 features, i.e. "
                  "`fidelity --prc --feature-extractor inception-v3-compat` in fp32, on the same images and counts "
                  "(n_generated, n_reference); not torch-fidelity's default `--prc`, which uses VGG-16 features")
DC_COMPARABLE = (f"the prdc package's density/coverage with nearest_k={PRDC_K} on the same Inception pool3 features, "
                 "images and counts (n_generated, n_reference); not values on VGG-16 features (Naeem et al.'s)")
APPROXIMATE_COMPARABLE = "only values of the same approximate mode"


@dataclass(frozen=True)
class FeatureMode:
    name: str
    #: torch-fidelity feature extractor registered under this name
    extractor: str
    #: batch size of the extraction (bf16 is faster with bigger batches: measured)
    batch_size: int
    #: True when values equal torch-fidelity's fp32 `inception-v3-compat` to the tested tolerance
    exact: bool
    description: str

    @property
    def label(self) -> str:
        return "exact" if self.exact else "approximate"


class FastInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's inception-v3-compat with BatchNorm folded into the convolutions (in fp32), channels_last,
    and torch-fidelity's TF1-compatible resize written as two fp32 matrix products; pool3 ("2048") features only.
    `compute_dtype` is the dtype of the trunk's weights and activations."""

    compute_dtype = torch.float32
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
        self.to(self.compute_dtype).to(memory_format=torch.channels_last)
        # the first convolution stays fp32: it is cheap (3 input channels) and low-precision input pixels cost
        # accuracy (bf16: mean feature error 3.5% -> 2.9% against fp32, measured)
        self.Conv2d_1a_3x3.float()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
        x = resize_like_tf1(x.float(), self.INPUT_IMAGE_SIZE)
        x = ((x - 128) / 128).contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_1a_3x3(x).to(self.compute_dtype)
        for name in self._TRUNK[1:]:
            x = getattr(self, name)(x)
        return (x.float().mean((2, 3)),)

    @staticmethod
    def get_provided_features_list():
        return (FEATURE_LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": FEATURE_LAYER, "kid": FEATURE_LAYER, "prc": FEATURE_LAYER}[metric]

    @staticmethod
    def can_be_compiled():
        return False


class InceptionV3BF16(FastInceptionV3):
    compute_dtype = torch.bfloat16


#: feature mode -> how features are extracted; "fp32" is the default everywhere
FEATURES: Registry[FeatureMode] = Registry("FID feature mode")
DEFAULT_FEATURES = "fp32"
for _mode, _cls in ((FeatureMode("fp32", "aegan-inception-v3-fp32", 64, True,
                                 "torch-fidelity's inception-v3-compat, BatchNorm folded, fp32 (exact)"),
                     FastInceptionV3),
                    (FeatureMode("bf16", "aegan-inception-v3-bf16", 128, False,
                                 "the same network in bf16 (approximate: FID within ~0.5%)"), InceptionV3BF16)):
    FEATURES.add(_mode.name, _mode)
    if _mode.extractor not in FEATURE_EXTRACTORS_REGISTRY:  # importing twice (e.g. reloads) must not fail
        torch_fidelity.register_feature_extractor(_mode.extractor, _cls)


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


# --- stage 1: features ----------------------------------------------------------------------------------------
@functools.cache
def _extractor(mode: str, weights_path: str, device: str) -> torch.nn.Module:
    """One extractor per (mode, weights, device) and process: building it costs seconds (weights, BN folding)."""
    return create_feature_extractor(FEATURES.get(mode).extractor, [FEATURE_LAYER], cuda=device.startswith("cuda"),
                                    verbose=False, feature_extractor_weights_path=weights_path)


def inception_features(images: torch.Tensor, *, mode: str = DEFAULT_FEATURES, weights: Weights | None = None,
                       device: torch.device | str = "cpu", batch_size: int | None = None) -> torch.Tensor:
    """Pool3 features (N x 2048, fp32, CPU) of uint8 N x C x H x W images, through torch-fidelity's own loop."""
    spec = FEATURES.get(mode)
    weights = weights or inception_weights()
    device = torch.device(device)
    fe = _extractor(mode, str(weights.path), str(device))
    # the exact modes in IEEE fp32: PyTorch's default TF32 convolutions on Ampere+ GPUs would not equal the CPU's
    with exact_fp32() if spec.exact else contextlib.nullcontext():
        # a GPU takes 4x the CPU's batch (the batch does not change the features: eval-mode BatchNorm)
        feats = get_featuresdict_from_dataset(UInt8Images(images), fe,
                                              batch_size or spec.batch_size * (4 if device.type == "cuda" else 1),
                                              device.type == "cuda", True, False)
    return feats[FEATURE_LAYER].float().cpu()


def cached_features(images: torch.Tensor, name: str, *, mode: str = DEFAULT_FEATURES, weights: Weights | None = None,
                    device: torch.device | str = "cpu", root: Path | None = None) -> torch.Tensor:
    """inception_features of images that recur (a test split), cached on disk under a key made of `name`, the
    images' digest, the weights' digest and the extractor, so that every run and metric shares one extraction.
    The file holds one tensor and is read with weights_only=True; an unreadable file is recomputed."""
    weights = weights or inception_weights()
    key = f"{name}-x{tensor_digest(images)[:16]}-w{weights.sha256[:12]}-{FEATURES.get(mode).extractor}"
    path = (root or cache_dir() / "features") / f"{key}.pt"
    if path.exists():
        with contextlib.suppress(Exception):  # a damaged cache file is recomputed, never trusted
            feats = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(feats, torch.Tensor) and feats.shape == (len(images), 2048):
                return feats
    feats = inception_features(images, mode=mode, weights=weights, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(feats, tmp))
    return feats


# --- stage 2: statistics -> values ------------------------------------------------------------------------------
def fid_value(gen: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    stats = [fid_features_to_statistics(f) for f in (gen, ref)]
    return {"fid": fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]}


def single_image_fid(ref: torch.Tensor) -> float:
    """The FID of a generator collapsed onto one typical real image: the median (lower) over the reference images r_i
    of the FID of {r_i, r_i, ...} against the reference. With a generated covariance of 0 that FID is exactly
    ||mu_ref - f(r_i)||^2 + tr(Sigma_ref) (Sigma as torch-fidelity's np.cov, ddof=1), so it costs no Inception pass
    beyond the reference's. The trivial baseline that samples must beat (reports.learned)."""
    f = ref.double()
    return float((f - f.mean(0)).pow(2).sum(1).median() + f.var(0, unbiased=True).sum())


def kid_value(gen: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    out = kid_features_to_metric(gen, ref, kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset_size(gen, ref),
                                 rng_seed=KID_SEED, verbose=False)
    return {"kid": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"]}


def prc_value(gen: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    out = prc_features_to_metric(gen, ref, prc_neighborhood=PRC_K, prc_batch_size=10000, save_cpu_ram=True,
                                 verbose=False)
    return {"precision": out["precision"], "recall": out["recall"]}


def density_coverage(gen: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        out = prdc.compute_prdc(real_features=ref.numpy(), fake_features=gen.numpy(), nearest_k=PRDC_K)
    return {"density": float(out["density"]), "coverage": float(out["coverage"])}


def kid_subset_size(gen: torch.Tensor, ref: torch.Tensor) -> int:
    return min(KID_SUBSET_SIZE, len(gen), len(ref))




def fid_kid(images1: torch.Tensor, images2: torch.Tensor, *, weights: Weights | None = None,
            mode: str = DEFAULT_FEATURES, device: torch.device | str = "cpu", fid: bool = True,
            kid: bool = True) -> dict[str, Any]:
    """FID and KID between two sets of uint8 N x C x H x W images, as torch_fidelity.calculate_metrics computes
    them with its defaults (fid/kid=False skips one: FID's 2048x2048 eigenvalue problem costs seconds)."""
    if min(len(images1), len(images2)) < 2:
        raise ValueError(f"FID and KID need at least 2 images on each side, got {len(images1)} and {len(images2)}")
    weights = weights or inception_weights()
    f1, f2 = (inception_features(x, mode=mode, weights=weights, device=device) for x in (images1, images2))
    out: dict[str, Any] = {"fid": None, "kid": None, "kid_std": None}
    if fid:
        out.update(fid_value(f1, f2))
    if kid:
        out.update(kid_value(f1, f2))
    return out


def provenance(weights: Weights, mode: str, device: torch.device | str, n1: int, n2: int) -> dict[str, Any]:
    """How Inception-feature values were measured; `feature_mode` says whether they equal torch-fidelity's."""
    spec = FEATURES.get(mode)
    return {"torch_fidelity": torch_fidelity_version(), **weights.provenance(), "feature_extractor": spec.extractor,
            "feature_mode": spec.label, "dtype": spec.name, "device": torch.device(device).type,
            **({"tf32": False} if spec.exact else {}),
            "n_images_1": n1, "n_images_2": n2, "resize": RESIZE, "image_format": IMAGE_FORMAT,
            "comparable_with": ("torch-fidelity's fp32 inception-v3-compat (fidelity --fid --kid) on the same images"
                                if spec.exact else APPROXIMATE_COMPARABLE)}


def kid_provenance(gen: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    return {"kid_subsets": KID_SUBSETS, "kid_subset_size": kid_subset_size(gen, ref), "kid_seed": KID_SEED}


# --- the metrics ----------------------------------------------------------------------------------------------
class _InceptionMetric(Metric):
    """Values on Inception features of some images of the method (images()) against the first n_images of the
    test split. The features are shared through the evaluation's memo: one extraction per image set."""

    default = False  # needs pretrained weights (fetched on first use): see EvalConfig.pretrained
    side = ""
    #: images needed on each side, and what needs them (fewer give n/a with the reason)
    need = 2
    needs_what = "FID and KID"

    def __init__(self, mode: str | None = None):
        self.mode = mode

    def images(self, ctx: EvalContext) -> torch.Tensor:
        raise NotImplementedError

    def values(self, gen: torch.Tensor, ref: torch.Tensor, prov: dict[str, Any]) -> list[MetricValue]:
        raise NotImplementedError

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        mode = self.mode or metric_options(ctx, self.name).get("dtype") or DEFAULT_FEATURES
        FEATURES.get(mode)  # an unknown mode fails before any work
        weights = inception_weights()
        ref = ctx.test_images()
        if len(ref) < self.need:
            return not_available(self.keys, f"{self.needs_what} need at least {self.need} held-out images, "
                                            f"got {len(ref)}")
        def generated() -> tuple[torch.Tensor, str]:
            gen = to_uint8(self.images(ctx).clamp(0, 1))
            ctx.save_eval_images(self.side, gen)
            return inception_features(gen, mode=mode, weights=weights, device=ctx.device), tensor_digest(gen)

        f_gen, gen_digest = ctx.shared(f"inception:{mode}:{self.side}", generated)
        if len(f_gen) < self.need:
            return not_available(self.keys, f"{self.needs_what} need at least {self.need} {self.side} images, "
                                            f"got {len(f_gen)}")
        f_ref = ctx.shared(f"inception:{mode}:reference", lambda: cached_features(
            ref, f"{ctx.data.name}-test-r{ctx.data.resolution}-n{len(ref)}", mode=mode, weights=weights,
            device=ctx.device))
        prov = {**ctx.base_provenance(), **provenance(weights, mode, ctx.device, len(f_gen), len(f_ref)),
                "generator_dtype": ctx.precision, "images_1": self.side, "images_1_fingerprint": gen_digest,
                "reference_split": "test", "n_generated": len(f_gen), "n_reference": len(f_ref)}
        return self.values(f_gen, f_ref, prov)


class _FidKid(_InceptionMetric):
    def values(self, gen, ref, prov):
        fid, kid = fid_value(gen, ref), kid_value(gen, ref)
        # the trivial baseline of the generation test (reports.learned), measured on the same reference
        baseline = {"single_image_fid": single_image_fid(ref)}
        return [MetricValue(f"fid_{self.side}", fid["fid"], {**prov, **baseline}),
                MetricValue(f"kid_{self.side}", kid["kid"], {**prov, **kid_provenance(gen, ref),
                                                            "kid_std": kid["kid_std"]})]


class _PRDC(_InceptionMetric):
    need = PRDC_K + 1  # k nearest neighbours within each set
    needs_what = "precision/recall and density/coverage"

    def values(self, gen, ref, prov):
        pr, dc = prc_value(gen, ref), density_coverage(gen, ref)
        exact = prov["comparable_with"] != APPROXIMATE_COMPARABLE
        pr_prov = {**prov, "implementation": "torch_fidelity.metric_prc (Kynkaanniemi et al. 2019)", "k": PRC_K,
                   "comparable_with": PRC_COMPARABLE if exact else APPROXIMATE_COMPARABLE}
        dc_prov = {**prov, "implementation": f"prdc {metadata.version('prdc')} (Naeem et al. 2020)", "k": PRDC_K,
                   "comparable_with": DC_COMPARABLE if exact else APPROXIMATE_COMPARABLE}
        return [MetricValue(f"precision_{self.side}", pr["precision"], pr_prov),
                MetricValue(f"recall_{self.side}", pr["recall"], pr_prov),
                MetricValue(f"density_{self.side}", dc["density"], dc_prov),
                MetricValue(f"coverage_{self.side}", dc["coverage"], dc_prov)]


class _Samples:
    requires = frozenset({"sample"})
    side = "samples"

    @torch.no_grad()
    def images(self, ctx: EvalContext) -> torch.Tensor:
        # the method's own sampler, in batches drawn from one seeded generator: the same samples every time
        g, n, out = ctx.generator(2), ctx.n_samples, []
        for i in range(0, n, ctx.batch_size):
            with ctx.autocast():
                out.append(ctx.method.sample(min(ctx.batch_size, n - i), g).float().cpu())
        return torch.cat(out)


class _Recon:
    requires = frozenset({"encode", "decode"})
    side = "recon"

    def images(self, ctx: EvalContext) -> torch.Tensor:
        return ctx.reconstructions()


@METRICS.register()
class FIDSamples(_Samples, _FidKid):
    name = "fid"
    description = "FID and KID of n_samples generated G(z) against the test split (torch-fidelity, Inception-v3)"
    keys = {"fid_samples": LOWER, "kid_samples": LOWER}


@METRICS.register()
class FIDRecon(_Recon, _FidKid):
    name = "fid_recon"
    description = "FID and KID of reconstructions G(E(x)) of the test split against the test split"
    keys = {"fid_recon": LOWER, "kid_recon": LOWER}


@METRICS.register()
class PRDCSamples(_Samples, _PRDC):
    name = "prdc"
    description = ("precision/recall (torch-fidelity, k=3) and density/coverage (prdc, k=5) of generated G(z) "
                   "against the test split, on FID's Inception features")
    # density is 1 in expectation when samples and real images share one distribution; collapse onto dense regions
    # raises it above 1 (Naeem et al. 2020), so it is read as closeness to 1
    keys = {"precision_samples": HIGHER, "recall_samples": HIGHER, "density_samples": CLOSEST_TO_1,
            "coverage_samples": HIGHER}


@METRICS.register()
class PRDCRecon(_Recon, _PRDC):
    name = "prdc_recon"
    description = "precision/recall and density/coverage of reconstructions G(E(x)) against the test split"
    keys = {"precision_recon": HIGHER, "recall_recon": HIGHER, "density_recon": CLOSEST_TO_1,
            "coverage_recon": HIGHER}

