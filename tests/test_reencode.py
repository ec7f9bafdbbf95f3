"""One re-encoding definition for every method: the prior's space, normalised by the same codes paired at random,
so that 1 means no inversion and no encoder scores well by collapsing or shrinking its codes."""

from __future__ import annotations

import pytest
import torch

from bench.core.data import load_dataset
from bench.runs.resolve import resolve_config
from methods import METHODS
from methods.trained import build_method
from metrics import EvalContext
from metrics.reencode import Reencoding, reencoding, shuffled_pair_sq_dist

WITH_ENCODER = [m for m in METHODS if "encode" in METHODS.get(m).provides]


def ratio_with_encoder(method_name: str, encode, prior: str = "sphere") -> dict[str, float]:
    cfg = resolve_config(method_name, "mnist5k", "smoke", overrides={"model": {"prior": prior}})
    data = load_dataset("mnist5k", None, cfg.data)
    method = build_method(cfg, data).eval()
    method.encode = encode  # what the metric reads of the method: E applied to G(z)
    ctx = EvalContext(method=method, data=data, device=torch.device("cpu"), precision="fp32", seed=0, n_images=8,
                      n_samples=128, batch_size=64)
    return {v.key: v.value for v in Reencoding().compute(ctx)}


@pytest.mark.parametrize(("method_name", "prior"), [*((m, "sphere") for m in WITH_ENCODER),
                                                     ("faae", "gaussian"), ("faae", "uniform")])
def test_a_collapsed_encoder_scores_no_better_than_random_pairs(method_name, prior, tmp_cache):
    constant = ratio_with_encoder(method_name, lambda x: torch.full((len(x), 32), 0.3), prior)
    assert constant["reencode_ratio"] >= 0.95
    g = torch.Generator().manual_seed(0)
    tiny = ratio_with_encoder(method_name, lambda x: 1e-6 * torch.randn(len(x), 32, generator=g), prior)
    assert tiny["reencode_ratio"] >= 0.95
    assert abs(tiny["reencode_angle_deg"] - 90) < 10


def test_ratio_zero_for_perfect_inversion_and_scale_free_on_the_sphere():
    z = torch.nn.functional.normalize(torch.randn(500, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    assert reencoding(z, z)["reencode_ratio"] == pytest.approx(0, abs=1e-12)
    noisy = torch.nn.functional.normalize(z + 0.03 * torch.randn(500, 64, generator=torch.Generator().manual_seed(2)),
                                          dim=1)
    v = reencoding(z, noisy)
    assert 0 < v["reencode_ratio"] < 0.1 and v["reencode_angle_deg"] < 45


def test_shuffled_pair_distance_matches_the_explicit_average():
    g = torch.Generator().manual_seed(3)
    z, zh = torch.randn(40, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    d = torch.cdist(z.double(), zh.double()).pow(2)
    explicit = (d.sum() - d.diagonal().sum()) / (40 * 39)
    assert shuffled_pair_sq_dist(z, zh) == pytest.approx(explicit.item(), rel=1e-9)
