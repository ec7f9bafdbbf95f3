"""Training-step throughput of the precision paths, and the one train.precision=auto picks on this machine.

Run: python -m pytest benchmarks/test_train_speed.py --benchmark-columns=mean,rounds -s
Same nets, same batch (64), same data; each method's full step (all of its phases), on the first command's
config (mnist5k `quick`: width 32, latent 32) and CIFAR-10 `quick` (width 64, latent 256). Paths: plain fp32
eager, fp32 + channels_last, and bf16 autocast + channels_last, the last only where the CPU computes bf16
natively (AVX512-BF16 or AMX): elsewhere bf16 is emulated, 7-10x slower than fp32, and `auto` never picks it,
so it is skipped and the summary says so. The summary prints each path's images/s, its speed-up over plain
fp32, which path `auto` resolves to here, and what bounds the step: its floating-point work
(torch.utils.flop_counter) divided by its time, against this CPU's matrix-multiply rate in the same precision
(a 2048x2048 matmul). About 1-2 minutes on a 2-core CPU of any kind.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.core.config import parse_overrides
from bench.core.data import ImageData
from bench.core.device import cpu_bf16_native
from bench.runs.resolve import resolve_config
from bench.runs.state import make_state
from bench.runs.step import to_batch, train_step
from benchmarks.cpu import cpu_name
from methods.trained import build_method, placed

PATHS = {"bf16+cl": {"train.precision": "bf16", "train.channels_last": "true"},
         "fp32+cl": {"train.precision": "fp32", "train.channels_last": "true"},
         "fp32": {"train.precision": "fp32", "train.channels_last": "false"}}
CONFIGS = {"mnist5k": (1, 32), "cifar10": (3, 32)}  # dataset -> channels, resolution
BATCH = 64
RESULTS: dict[tuple[str, str], dict[str, float]] = {}
#: (dataset, method) -> floating-point operations of one training step
FLOPS: dict[tuple[str, str], float] = {}


def matmul_rate(dtype: torch.dtype, n: int = 2048, rounds: int = 5) -> float:
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
    if not RESULTS:
        return
    native = cpu_bf16_native()
    auto = resolve_config("faae", "mnist5k", "quick").train
    auto_path = f"{auto.precision}{'+cl' if auto.channels_last else ''}"
    peak = {"fp32": matmul_rate(torch.float32)}
    if native:
        peak["bf16"] = matmul_rate(torch.bfloat16)
    print(f"\nCPU: {cpu_name()}, {torch.get_num_threads()} threads; matmul GFLOP/s: "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peak.items()))
    print(f"train.precision=auto resolves to {auto.precision} here; default path: {auto_path}"
          + ("" if native else " (no native bf16: the emulated bf16 path is not timed)"))
    print(f"training step throughput at batch {BATCH} (images/s), speed-up over plain fp32, achieved GFLOP/s and "
          "its share of the matmul rate in that precision:")
    for (dataset, method), r in sorted(RESULTS.items()):
        if "fp32" not in r:
            continue
        per_image = FLOPS[(dataset, method)] / BATCH
        cells = []
        for path, ips in r.items():
            rate = ips * per_image
            share = rate / peak[path.split("+")[0]]
            cells.append(f"{path}{'*' if path == auto_path else ''} {ips:6.1f} ({ips / r['fp32']:.2f}x, "
                         f"{rate / 1e9:.0f} GFLOP/s, {share:.0%})")
        print(f"  {dataset:7s} {method:4s} {per_image / 1e6:5.0f} MFLOP/image: " + "  ".join(cells))
    print("  * the path train.precision=auto takes on this machine")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("method", ["faae", "aae"])
@pytest.mark.parametrize("dataset", list(CONFIGS))
def test_train_step(benchmark, dataset, method, path):
    if path.startswith("bf16") and not cpu_bf16_native():
        pytest.skip("no native bf16 on this CPU: the emulated path is 7-10x slower and never chosen by auto")
    channels, side = CONFIGS[dataset]
    sets = [f"{k}={v}" for k, v in PATHS[path].items()] + [f"train.batch_size={BATCH}"]
    cfg = resolve_config(method, dataset, "quick", 0, parse_overrides(sets))
    g = torch.Generator().manual_seed(0)
    data = ImageData("synthetic", torch.randint(0, 256, (BATCH, channels, side, side), dtype=torch.uint8, generator=g),
                     torch.zeros(1, channels, side, side, dtype=torch.uint8))
    m = placed(build_method(cfg, data), cfg, "cpu")
    state = make_state(cfg, m)
    cpu = torch.device("cpu")
    x = to_batch(data.train, cpu, cfg.train.channels_last)
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels
        train_step(state, x, cfg, cpu)
    if (dataset, method) not in FLOPS:
        counter = FlopCounterMode(display=False)
        with counter:
            train_step(state, x, cfg, cpu)
        FLOPS[(dataset, method)] = counter.get_total_flops()
    benchmark.pedantic(train_step, args=(state, x, cfg, cpu), rounds=5, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: the step ran once, untimed
        return
    RESULTS.setdefault((dataset, method), {})[path] = BATCH / benchmark.stats.stats.mean
