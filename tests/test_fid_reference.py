"""The default FID/KID equal torch-fidelity's fp32 `calculate_metrics` on real CIFAR-10 images: 300 vs 300 in the
default run, 2,000 vs 2,000 under the `reference` marker (about 15 minutes on 2 CPU cores; .ci/run runs it)."""

from __future__ import annotations

import pytest
import torch

from bench.commands.score import read_image
from bench.core.data import list_images
from metrics import weights as W
from metrics.fidelity import UInt8Images, fid_kid


def spread(folder, n: int) -> torch.Tensor:
    """n images taken evenly over the sorted files of a folder (every class), read as torch-fidelity reads them."""
    files = list_images(folder)
    return torch.stack([read_image(f, rgb=True) for f in files[:: len(files) // n][:n]])


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("n", [300, pytest.param(2000, marks=pytest.mark.reference)])
def test_default_fid_kid_equal_torch_fidelity_on_cifar10(shared_data, n, monkeypatch):
    monkeypatch.setenv(W.WEIGHTS_ENV, str(W.weights_dir()))
    a, b = spread(shared_data / "cifar10" / "test", n), spread(shared_data / "cifar10" / "train", n)
    ours = fid_kid(a, b)  # the defaults `bench score`, `bench eval` and `bench run` use
    direct = torch_fidelity_fp32(a, b)
    assert ours["fid"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-2)
    assert 1 < ours["fid"] < 200  # test vs train CIFAR-10: a small but non-zero distance


def torch_fidelity_fp32(a: torch.Tensor, b: torch.Tensor) -> dict:
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=UInt8Images(a), input2=UInt8Images(b), fid=True, kid=True, kid_subset_size=min(1000, len(a)),
        feature_extractor_weights_path=str(W.inception_weights().path), cuda=False, save_cpu_ram=True, cache=False,
        verbose=False)
