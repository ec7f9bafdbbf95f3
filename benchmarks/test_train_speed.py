"""Training-step throughput: the bf16 autocast + channels_last fast path vs plain fp32 eager.

Run: python -m pytest benchmarks/test_train_speed.py --benchmark-columns=mean,rounds
Same nets, same batch, same data; each method's full step (all of its phases). The speed-ups are
printed at the end of the session and kept in each benchmark's extra_info (images_per_s).
"""

from __future__ import annotations

import pytest
import torch

from bench.core.config import parse_overrides
from bench.core.data import ImageData
from bench.resolve import resolve_config
from bench.runner import make_state, to_batch, train_step
from methods.trained import build_method

PATHS = {"fast": {"train.precision": "bf16", "train.channels_last": "true"},
         "fp32": {"train.precision": "fp32", "train.channels_last": "false"}}
RESULTS: dict[tuple[str, int], dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\ntraining step throughput (images/s), fast path vs plain fp32 eager:")
    for (method, bs), r in sorted(RESULTS.items()):
        if {"fast", "fp32"} <= r.keys():
            print(f"  {method:6s} batch {bs:4d}: fast {r['fast']:7.1f}  fp32 {r['fp32']:7.1f}  "
                  f"speed-up {r['fast'] / r['fp32']:.2f}x")


@pytest.mark.parametrize("batch", [64, 128])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("method", ["faae", "aae"])
def test_train_step(benchmark, method, path, batch):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sets = [f"{k}={v}" for k, v in PATHS[path].items()] + [f"train.batch_size={batch}"]
    cfg = resolve_config(method, "cifar10", "quick", 0, parse_overrides(sets))
    g = torch.Generator().manual_seed(0)
    data = ImageData("synthetic", torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    m = build_method(cfg, data)
    if cfg.train.channels_last:
        m = m.to(memory_format=torch.channels_last)
    state = make_state(cfg, m)
    cpu = torch.device("cpu")
    x = to_batch(data.train, cpu, cfg.train.channels_last)
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        train_step(state, x, cfg, cpu)
    benchmark.pedantic(train_step, args=(state, x, cfg, cpu), rounds=8, iterations=1)
    ips = batch / benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = ips
    RESULTS.setdefault((method, batch), {})[path] = ips
