"""Training-step throughput: the bf16 autocast + channels_last fast path vs plain fp32 eager.

Run: python -m pytest benchmarks/test_train_speed.py --benchmark-columns=mean,rounds
Same nets, same batch, same data; each method's full step (all of its phases). The speed-ups are
printed at the end of the session and kept in each benchmark's extra_info (images_per_s), with what bounds
them: the step's floating-point work (torch.utils.flop_counter) divided by its time, against this CPU's
matrix-multiply rate in the same precision (a 2048x2048 matmul). Where the step already runs near that rate,
the speed-up of bf16 over fp32 cannot exceed the ratio of the two matmul rates: about 2x with AVX512-BF16
alone, about 7x with AMX.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.core.config import parse_overrides
from bench.core.data import ImageData
from bench.resolve import resolve_config
from bench.runner import make_state, to_batch, train_step
from benchmarks.cpu import cpu_name
from methods.trained import build_method, placed

PATHS = {"fast": {"train.precision": "bf16", "train.channels_last": "true"},
         "fp32": {"train.precision": "fp32", "train.channels_last": "false"}}
RESULTS: dict[tuple[str, int], dict[str, float]] = {}
#: (method, batch) -> floating-point operations of one training step
FLOPS: dict[tuple[str, int], float] = {}


def matmul_rate(dtype: torch.dtype, n: int = 2048, rounds: int = 10) -> float:
    """FLOP/s of a large square matmul: about the best this CPU does in that precision."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(rounds):
        a @ b
    return 2 * n**3 * rounds / (time.perf_counter() - t0)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    peak = {"fast": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    print(f"\nCPU: {cpu_name()}, {torch.get_num_threads()} threads; matmul GFLOP/s: bf16 {peak['fast'] / 1e9:.0f}, "
          f"fp32 {peak['fp32'] / 1e9:.0f} "
          f"(ratio {peak['fast'] / peak['fp32']:.2f}x: the ceiling of the speed-up below where convolutions dominate)")
    print("training step throughput (images/s), fast path vs plain fp32 eager; achieved GFLOP/s and the share "
          "of the matmul rate:")
    for (method, bs), r in sorted(RESULTS.items()):
        if {"fast", "fp32"} <= r.keys():
            per_image = FLOPS[(method, bs)] / bs
            rate = {p: r[p] * per_image for p in ("fast", "fp32")}
            print(f"  {method:6s} batch {bs:4d}: fast {r['fast']:7.1f}  fp32 {r['fp32']:7.1f}  "
                  f"speed-up {r['fast'] / r['fp32']:.2f}x  |  {per_image / 1e6:.0f} MFLOP/image, fast "
                  f"{rate['fast'] / 1e9:.0f} GFLOP/s ({rate['fast'] / peak['fast']:.0%}), fp32 "
                  f"{rate['fp32'] / 1e9:.0f} GFLOP/s ({rate['fp32'] / peak['fp32']:.0%})")


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
    m = placed(build_method(cfg, data), cfg, "cpu")
    state = make_state(cfg, m)
    cpu = torch.device("cpu")
    x = to_batch(data.train, cpu, cfg.train.channels_last)
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        train_step(state, x, cfg, cpu)
    if (method, batch) not in FLOPS:
        counter = FlopCounterMode(display=False)
        with counter:
            train_step(state, x, cfg, cpu)
        FLOPS[(method, batch)] = counter.get_total_flops()
    benchmark.pedantic(train_step, args=(state, x, cfg, cpu), rounds=8, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: the step ran once, untimed
        return
    ips = batch / benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = ips
    RESULTS.setdefault((method, batch), {})[path] = ips
