"""Encoding throughput of the latent-recovery methods at the quick protocol's settings (pytest-benchmark).

Not collected by default (testpaths is tests/); run with
    python -m pytest benchmarks/test_encoding_speed.py --benchmark-enable
The cost of "latent-recovery" and "+sc" is in encoding: each image costs `steps` x `restarts` forward and backward
passes of G, against one encoder pass for the other methods (measured alongside for scale). Weights are
random: throughput does not depend on them. The model is the quick protocol's (CIFAR-sized 32x32x3,
width 64, 256-dim sphere), one evaluation batch (eval.batch_size, 250), bf16 autocast and channels_last as
the runner evaluates. images/s is stored in the benchmark's extra_info.
"""

from __future__ import annotations

import pytest
import torch

from bench.runs.resolve import resolve_config
from methods import METHODS, ModelSpec


def quick_method(name: str):
    cfg = resolve_config(name, "cifar10", "quick")
    cls = METHODS.get(name)
    spec = ModelSpec(3, 32, cfg.model.latent_dim, cfg.model.width, cfg.model.prior)
    torch.manual_seed(0)
    m = cls(spec, cls.resolve_params(cfg.params)).eval().to(memory_format=torch.channels_last)
    return m, cfg


@pytest.mark.parametrize("name", ["faae", "latent-recovery", "faae+sc"])
def test_encode_images_per_second(benchmark, name):
    m, cfg = quick_method(name)
    batch = cfg.eval.batch_size
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)

    def encode():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return m.encode(x)

    searches = "steps" in cfg.params
    if not searches:
        encode()  # warm-up (oneDNN picks its kernels on the first call); a search amortises it over its steps
    z = benchmark.pedantic(encode, rounds=1 if searches else 5, iterations=1)
    assert z.shape == (batch, cfg.model.latent_dim) and torch.isfinite(z).all()
    if benchmark.stats is None:  # --benchmark-disable: the step ran once, untimed
        return
    per_s = batch / benchmark.stats.stats.mean
    n = cfg.eval.n_images
    benchmark.extra_info.update(
        images_per_s=round(per_s, 1), batch=batch, threads=torch.get_num_threads(),
        search={k: cfg.params[k] for k in ("steps", "restarts")} if searches else None,
        seconds_for_quick_eval_images=round(n / per_s, 1), quick_eval_images=n,
    )
    print(f"\n{name}: {per_s:.1f} images/s; {n} quick-protocol images take {n / per_s:.0f} s per encode pass")
