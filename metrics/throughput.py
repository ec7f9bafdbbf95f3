"""Throughput: training images/s (as the runner measured it) and encode/decode images/s at evaluation.

Encode and decode are timed on the evaluation's device and precision at the evaluation batch size: one
warm-up batch (allocations, kernel selection), then timed batches until there are MIN_BATCHES and
MIN_SECONDS have passed, at most MAX_BATCHES or BUDGET_S seconds (latent recovery's encoder optimises
per batch). Timings depend on the machine's load; the provenance says how many batches were timed, on
what, with how many threads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .base import HIGHER, METRICS, EvalContext, Metric, MetricValue, lacking

MIN_BATCHES = 3
MAX_BATCHES = 50
#: keep timing small batches until this much time has passed (a few milliseconds are all noise)
MIN_SECONDS = 0.5
#: stop after this long even below MIN_BATCHES (latent recovery's encoder optimises per batch)
BUDGET_S = 10.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()  # not inference_mode: latent recovery's encoder needs autograd inside
def images_per_second(ctx: EvalContext, fn: Callable[[torch.Tensor], torch.Tensor],
                      batch: torch.Tensor) -> tuple[float, int]:
    """(images/s, batches timed) of fn on one batch already on the device, after one warm-up call. The
    rate uses the median batch time, which a stall of the shared machine moves less than the mean."""
    times: list[float] = []
    with ctx.autocast():
        fn(batch)
        _sync(ctx.device)
        start = time.perf_counter()
        while len(times) < MAX_BATCHES:
            t0 = time.perf_counter()
            fn(batch)
            _sync(ctx.device)
            times.append(time.perf_counter() - t0)
            spent = time.perf_counter() - start
            if spent > BUDGET_S or (len(times) >= MIN_BATCHES and spent > MIN_SECONDS):
                break
    return len(batch) / statistics.median(times), len(times)


@METRICS.register()
class Throughput(Metric):
    name = "throughput"
    description = "training images/s (from the run), encode and decode images/s on the eval device and precision"
    # each key needs its own capability (see compute): a method without an encoder still gets the others
    requires = frozenset()
    keys = {"train_images_per_s": HIGHER, "encode_images_per_s": HIGHER, "decode_images_per_s": HIGHER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        m = ctx.method
        base = ctx.base_provenance()
        out = []
        if "train_images_per_s" in ctx.extras:
            prov = {**base, "source": "runner: wall time of the training steps (batch transfer and every phase)",
                    "train_device": ctx.extras.get("train_device", base["device"]),
                    "batch_size": ctx.config.train.batch_size if ctx.config is not None else None}
            out.append(MetricValue("train_images_per_s", float(ctx.extras["train_images_per_s"]), prov))
        else:
            out.append(MetricValue("train_images_per_s", None, {"reason": "training throughput was not measured"}))

        bs = ctx.batch_size
        timing = {**base, "batch_size": bs, "warmup_batches": 1, "statistic": "batch size / median batch time",
                  "threads": torch.get_num_threads(), "note": "wall-clock; depends on machine load"}
        reason = lacking(ctx, {"encode"})
        if reason:
            out.append(MetricValue("encode_images_per_s", None, {"reason": reason}))
        else:
            x = ctx.test_images()
            # repeat held-out images when the split is smaller than one batch
            x = x.repeat((bs + len(x) - 1) // len(x), 1, 1, 1)[:bs]
            rate, n = images_per_second(ctx, m.encode, next(ctx.batches(x)))
            out.append(MetricValue("encode_images_per_s", rate, {**timing, "timed_batches": n}))
        reason = lacking(ctx, {"decode"})
        if reason:
            out.append(MetricValue("decode_images_per_s", None, {"reason": reason}))
        else:
            z = m.prior.sample(bs, m.spec.latent_dim, generator=ctx.generator(4)).to(ctx.device)
            rate, n = images_per_second(ctx, m.decode, z)
            out.append(MetricValue("decode_images_per_s", rate, {**timing, "split": "prior", "timed_batches": n}))
        return out
