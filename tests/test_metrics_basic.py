"""The metrics that need no pretrained weights: known answers, ranges on a smoke model, n/a, batch size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.filters import laplace
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from bench.core.config import parse_overrides
from bench.core.data import ImageData, load_dataset
from bench.core.store import Store
from bench.runs.resolve import resolve_config
from methods import ModelSpec
from methods.base import Method
from methods.trained import build_method
from metrics import METRICS, EvalContext, evaluate
from metrics.image_quality import psnr, ssim
from metrics.probe import linear_probe
from metrics.reencode import angle_deg
from metrics.sharpness import laplacian_variance, luminance, sharpness

CPU = torch.device("cpu")
MINE = ("image_quality", "reencode", "cycle", "sharpness", "probe", "throughput")


def images(n: int = 8, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] with edges (blurred noise plus a bright square)."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.rand(n, c, size, size, generator=g), [5, 5], [1.0, 1.0])
    x[:, :, 8:20, 10:22] += 0.4
    return x.clamp(0, 1)


# --- known answers ------------------------------------------------------------------------------------------
def test_psnr_known_values():
    a = images()
    assert torch.isinf(psnr(a, a)).all()
    b = (a + 0.1).clamp(0, 1)
    mse = (a - b).pow(2).flatten(1).mean(1).double()
    assert torch.allclose(psnr(b, a), 10 * torch.log10(1 / mse), atol=1e-6)
    # a constant offset of 0.1 everywhere (no clipping) is exactly 20 dB
    flat = torch.full((2, 1, 16, 16), 0.5)
    assert torch.allclose(psnr(flat + 0.1, flat), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9)


def test_ssim_known_values():
    a = images()
    assert torch.allclose(ssim(a, a), torch.ones(len(a), dtype=torch.float64))
    assert torch.allclose(ssim(a[:, :1], a[:, :1]), torch.ones(len(a), dtype=torch.float64))
    noisy = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    s = ssim(noisy, a)
    assert ((s > -1) & (s < 0.9)).all()
    assert (ssim(noisy, a) == ssim(a, noisy)).all()  # symmetric
    with pytest.raises(ValueError):
        ssim(a, a[:, :1])


def test_sharpness_known_values():
    real = images(16)
    assert sharpness(real) / sharpness(real) == 1.0
    blurred = gaussian_blur(real, [5, 5], [1.5, 1.5])
    assert sharpness(blurred) / sharpness(real) < 0.5
    noisy = (real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert sharpness(noisy) / sharpness(real) > 1.0
    # the same numbers as scikit-image's Laplace filter (ksize 3) on the interior pixels
    y = luminance(real)[:, 0].numpy()
    ref = [laplace(img, ksize=3)[1:-1, 1:-1].var() for img in y]
    assert np.allclose(laplacian_variance(real).numpy(), ref, rtol=1e-9)
    # RGB grey equals the single channel
    grey = real[:, :1]
    assert torch.allclose(laplacian_variance(grey.expand(-1, 3, -1, -1)), laplacian_variance(grey))


def test_angle_known_values():
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(angle_deg(z, 3 * z), torch.zeros(5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(angle_deg(z, -z), torch.full((5,), 180.0, dtype=torch.float64), atol=1e-5)
    e = torch.eye(2)
    assert angle_deg(e[:1], e[1:]).item() == pytest.approx(90.0)


def test_linear_probe_separable_vs_random_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 1200)
    centres = rng.normal(0, 3, (4, 20))
    x = centres[y] + rng.normal(0, 1, (1200, 20))
    acc, fit = linear_probe(x[:800], y[:800], x[800:], y[800:])
    assert acc > 0.95 and fit["n_iter"] > 0
    shuffled = rng.permutation(y)
    acc_random, _ = linear_probe(x[:800], shuffled[:800], x[800:], shuffled[800:])
    assert abs(acc_random - 0.25) < 0.08


# --- test-only methods -------------------------------------------------------------------------------------
class HalvesEncoder(Method):
    """Encodes an image as the mean brightness of its top and bottom halves; decodes with a linear map.
    Not registered: it exists for these tests."""

    name = "halves"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.G = nn.Linear(spec.latent_dim, spec.channels * spec.resolution**2)

    def encode(self, x):
        h = x.shape[-2] // 2
        return torch.stack([x[..., :h, :].mean((1, 2, 3)), x[..., h:, :].mean((1, 2, 3))], 1)

    def decode(self, z):
        s = self.spec
        return torch.sigmoid(self.G(z)).view(-1, s.channels, s.resolution, s.resolution)


class DecoderOnly(HalvesEncoder):
    name = "decoder-only"
    provides = frozenset({"decode", "sample"})

    def encode(self, x):
        raise AssertionError("a metric called encode on a method without it")


def halves_data(n: int, labels: str = "halves", seed: int = 0) -> ImageData:
    """Label 1: bright top half; label 0: bright bottom half; plus noise. Or random labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.5
    x[y == 1, :, :8] += 0.5
    x[y == 0, :, 8:] += 0.5
    if labels == "random":
        y = torch.randint(0, 2, (n,), generator=g)
    img = (x * 255).round().to(torch.uint8)
    k = n * 3 // 4
    return ImageData("halves", img[:k], img[k:], y[:k], y[k:])


def context(method: Method, data: ImageData, batch_size: int = 64, n: int = 64, precision: str = "fp32",
            extras=None) -> EvalContext:
    return EvalContext(method=method.eval(), data=data, device=CPU, precision=precision, seed=0,
                       n_images=min(n, len(data.test)), n_samples=n, batch_size=batch_size, extras=extras or {})


def compute(name: str, ctx: EvalContext) -> dict:
    metric = METRICS.get(name)()
    assert metric.available(frozenset(type(ctx.method).provides))
    values = metric.compute(ctx)
    assert [v.key for v in values] == list(metric.keys)  # constant keys, in order
    return {v.key: v for v in values}


def test_probe_metric_on_labelled_and_unlabelled_data():
    spec = ModelSpec(channels=1, resolution=16, latent_dim=2)
    method = HalvesEncoder(spec)
    good = compute("probe", context(method, halves_data(800), n=200))["probe_accuracy"]
    assert good.value > 0.95
    assert good.provenance["n_images"] == 200 and "5-fold" in good.provenance["protocol"]
    assert good.provenance["sklearn_version"] and good.provenance["chance_accuracy"] < 0.65
    chance = compute("probe", context(method, halves_data(800, "random"), n=200))["probe_accuracy"]
    assert abs(chance.value - 0.5) < 0.12
    data = halves_data(100)
    data.train_labels = data.test_labels = None
    na = compute("probe", context(method, data))["probe_accuracy"]
    assert na.value is None and "no class labels" in na.provenance["reason"]
    one_class = halves_data(100)
    one_class.test_labels = torch.zeros_like(one_class.test_labels)
    na = compute("probe", context(method, one_class))["probe_accuracy"]
    assert na.value is None and "two or more classes" in na.provenance["reason"]
    few = halves_data(100)
    few.test_labels = torch.zeros_like(few.test_labels)
    few.test_labels[:3] = 1  # a class with 3 held-out images: 3 folds
    assert compute("probe", context(method, few))["probe_accuracy"].provenance["folds"] == 3


def test_method_without_encoder_gets_na(tmp_path):
    spec = ModelSpec(channels=1, resolution=16, latent_dim=2)
    store = Store(tmp_path / "results.db")
    cfg = resolve_config("faae", "mnist5k", "smoke")
    evaluate(DecoderOnly(spec), cfg, halves_data(200), CPU, store, "r", metrics=list(MINE), log=None)
    got = {r["key"]: r for r in store.metric_rows(["r"])}
    assert set(got) == {k for n in MINE for k in METRICS.get(n).keys}
    for key in ("recon_psnr", "recon_ssim", "reencode_angle_deg", "cycle_mse", "probe_accuracy",
                "recon_sharpness_ratio", "encode_images_per_s", "train_images_per_s"):
        assert got[key]["value"] is None and got[key]["provenance"]["reason"], key
    assert "lacks encode" in got["probe_accuracy"]["provenance"]["reason"]
    # what needs only the decoder is still measured
    assert got["sample_sharpness_ratio"]["value"] > 0
    assert got["decode_images_per_s"]["value"] > 0


# --- a smoke model -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_faae(tmp_path_factory):
    """An untrained F-AAE of the smoke protocol's size on the embedded MNIST subset."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEGAN_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        cfg = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides(["data.max_train=300"]))
        data = load_dataset("mnist5k", None, cfg.data)
    torch.manual_seed(0)
    return build_method(cfg, data), data


@pytest.mark.slow  # the probe's fit and ~1 s of throughput timing
def test_smoke_model_values_are_finite_and_in_range(smoke_faae):
    method, data = smoke_faae
    # 150 held-out digits: the cross-validated probe needs 5 of every class
    ctx = context(method, data, batch_size=32, n=150, precision="bf16", extras={"train_images_per_s": 123.0})
    v = {k: mv for name in MINE for k, mv in compute(name, ctx).items()}
    assert all(mv.value is not None and math.isfinite(mv.value) for mv in v.values()), v
    assert 0 < v["recon_psnr"].value < 60 and -1 <= v["recon_ssim"].value <= 1
    assert 0 <= v["reencode_angle_deg"].value <= 180 and v["reencode_error"].value >= 0
    assert 0 <= v["cycle_mse"].value <= 1
    assert v["recon_sharpness_ratio"].value > 0 and v["sample_sharpness_ratio"].value > 0
    assert 0 <= v["probe_accuracy"].value <= 1
    assert v["train_images_per_s"].value == 123.0
    assert v["encode_images_per_s"].value > 0 and v["decode_images_per_s"].value > 0
    for mv in v.values():  # provenance on every value
        assert {"device", "dtype", "seed", "dataset"} <= set(mv.provenance), mv
    assert v["recon_psnr"].provenance["skimage_version"] and v["recon_psnr"].provenance["n_images"] == 150
    assert v["encode_images_per_s"].provenance["timed_batches"] >= 1
    assert v["encode_images_per_s"].provenance["batch_size"] == 32
    assert v["probe_accuracy"].provenance["n_images"] == 150


def test_batch_size_invariance(smoke_faae):
    method, data = smoke_faae
    a = {**compute("image_quality", context(method, data, batch_size=7, n=40)),
         **compute("sharpness", context(method, data, batch_size=7, n=40))}
    b = {**compute("image_quality", context(method, data, batch_size=40, n=40)),
         **compute("sharpness", context(method, data, batch_size=40, n=40))}
    for key in a:
        assert a[key].value == pytest.approx(b[key].value, rel=1e-4), key


class CountingEncoder(HalvesEncoder):
    name = "counting"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.encoded = 0

    def encode(self, x):
        self.encoded += len(x)
        return super().encode(x)


def test_held_out_images_are_encoded_once_per_evaluation(tmp_path):
    """Search-based encoders cost minutes per pass: every reconstruction metric shares one encoding."""
    method = CountingEncoder(ModelSpec(channels=1, resolution=16, latent_dim=2))
    data = halves_data(200)
    cfg = resolve_config("faae", "mnist5k", "smoke")
    store = Store(tmp_path / "results.db")
    evaluate(method, cfg, data, CPU, store, "r", log=None,
             metrics=["mse", "image_quality", "sharpness", "probe", "reencode", "cycle"])
    assert method.encoded == min(cfg.eval.n_images, len(data.test)) + cfg.eval.n_samples
    assert all(r["value"] is not None for r in store.metric_rows(["r"]))


def test_each_metrics_line_fits_100_columns(tmp_path):
    """A long run id and the three throughput keys made 123-column lines: they wrap under the run id."""
    method = CountingEncoder(ModelSpec(channels=1, resolution=16, latent_dim=2))
    cfg = resolve_config("faae", "mnist5k", "smoke")
    lines: list[str] = []
    run_id = "faae[loss.rec_weight=0,train.max_steps=150]-mnist5k-smoke-s0-0123456789ab"
    evaluate(method, cfg, halves_data(40), CPU, Store(tmp_path / "results.db"), run_id, log=lines.append,
             metrics=["reencode", "throughput"], extras={"train_images_per_s": 123.4})
    printed = "\n".join(lines).splitlines()
    assert max(map(len, printed)) <= 100, printed
    assert len(printed) > len(lines) and "decode_images_per_s=" in " ".join(printed)
