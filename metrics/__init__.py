"""Metrics: one module per metric, registered in METRICS; import order is display order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from bench.core.console import fit
from bench.core.result_file import write_result

# isort: off
from . import reconstruction  # noqa: F401  (importing registers)
from . import image_quality  # noqa: F401
from . import reencode  # noqa: F401
from . import lpips_metric  # noqa: F401
from . import fidelity  # noqa: F401
from . import cycle  # noqa: F401
from . import sharpness  # noqa: F401
from . import probe  # noqa: F401
from . import throughput  # noqa: F401
# isort: on
from .base import METRICS, EvalContext, Metric, MetricValue, direction

__all__ = ["METRICS", "EvalContext", "Metric", "MetricValue", "direction", "evaluate", "named_metrics",
           "select_metrics"]


def named_metrics(names: list[str]) -> list[str] | None:
    """Metrics named on the command line, validated now; None (no names) leaves the default set to each
    run's protocol (eval.pretrained), which `evaluate` resolves."""
    return select_metrics(names) if names else None


def select_metrics(names: list[str] | None, pretrained: bool = True) -> list[str]:
    """Metric names in registry order; globs are allowed. No names select the default set: every metric,
    less those needing pretrained networks (`default = False`) unless `pretrained` (eval.pretrained)."""
    if not names:
        return [n for n, cls in METRICS.items() if cls.default or pretrained]
    chosen: list[str] = []
    for pattern in names:
        hits = METRICS.names(pattern)
        if not hits:
            METRICS.get(pattern)  # raises with the list of valid names
        chosen += hits
    return [n for n in METRICS if n in chosen]


def evaluate(method, cfg, data, device: torch.device, store, run_id: str, run_dir: Path | None = None,
             metrics: list[str] | None = None, overwrite: bool = False, extras: dict[str, Any] | None = None,
             log=print, trained: dict[str, Any] | None = None) -> None:
    """Score a trained method with every selected metric not yet in the store (all when overwrite).
    With a run_dir, the run's result file is rewritten after each metric stored (bench.core.result_file).
    `trained`: how the weights were trained, recorded in every value's provenance (see EvalContext.trained)."""
    done = set() if overwrite else store.metrics_done(run_id)
    provides = frozenset(type(method).provides)
    ctx = EvalContext(method=method, data=data, device=device, precision=cfg.train.precision, seed=cfg.seed,
                      n_images=min(cfg.eval.n_images or len(data.test), len(data.test)),
                      n_samples=cfg.eval.n_samples, batch_size=cfg.eval.batch_size, run_dir=run_dir, config=cfg,
                      extras=extras or {}, trained=trained or {})
    method.eval()
    for name in select_metrics(metrics, cfg.eval.pretrained):
        if name in done:
            continue
        metric = METRICS.get(name)()
        t0 = time.perf_counter()
        values = metric.compute(ctx) if metric.available(provides) else metric.not_applicable(provides)
        seconds = time.perf_counter() - t0
        values = [MetricValue(v.key, v.value, {**v.provenance, "metric": name, "eval_seconds": round(seconds, 3)})
                  for v in values]
        store.put_metrics(run_id, name, values)
        if run_dir is not None:
            write_result(store, run_id, run_dir)
        if log:
            shown = ", ".join(f"{v.key}={v.value:.4g}" if v.value is not None else f"{v.key}=n/a" for v in values)
            log(fit(f"  {run_id}: {shown}  ({seconds:.1f}s)"))
