"""The Metric interface: a metric states what it requires of a method and the result keys it writes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from bench.core.device import autocast, device_provenance
from bench.core.provenance import CLOSEST_TO_1 as CLOSEST_TO_1  # re-exported: metrics' directions
from bench.core.provenance import HIGHER as HIGHER
from bench.core.provenance import LOWER as LOWER
from bench.core.registry import Registry


@dataclass(frozen=True)
class MetricValue:
    key: str
    #: None means n/a (the method lacks a capability the metric requires)
    value: float | None
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalContext:
    """What a metric sees: a trained method in eval mode, the dataset, and the evaluation settings."""

    method: Any  # methods.base.Method, in eval mode on `device`
    data: Any  # bench.data.ImageData
    device: torch.device
    precision: str  # "bf16" or "fp32"
    seed: int
    n_images: int  # held-out images to score (already capped at the test split's size)
    n_samples: int
    batch_size: int
    run_dir: Any = None
    config: Any = None  # bench.core.config.RunConfig
    #: filled by the runner (e.g. measured training throughput) for metrics that report it
    extras: dict[str, Any] = field(default_factory=dict)
    #: how the weights were trained, where that may move the values: data-parallel world size and batch per
    #: process (bench.core.distributed.training_provenance; empty for one process). In every value's provenance
    trained: dict[str, Any] = field(default_factory=dict)
    #: what the metrics of one evaluation share, computed once (see `shared`): encodings and reconstructions of
    #: the held-out images (encoding by latent search costs minutes), Inception features (FID and PRDC)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run's seed: the same draws on every evaluation."""
        return torch.Generator().manual_seed(self.seed * 1000 + 17 + offset)

    def test_images(self) -> torch.Tensor:
        """The first n_images held-out images, uint8 N x C x H x W on the CPU."""
        return self.data.test[: self.n_images]

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` the first time a metric of this evaluation asks for `key`, the same object afterwards: how
        metrics share work (do not modify what it returns)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def test_codes(self) -> torch.Tensor:
        """E(x) of the held-out images, fp32 on the CPU (computed once per evaluation)."""
        return self.shared("codes", lambda: self.map_batches(self.method.encode, self.test_images()))

    def reconstructions(self) -> torch.Tensor:
        """G(E(x)) of the held-out images, fp32 on the CPU, unclamped (computed once; do not modify)."""
        return self.shared("recon", lambda: self.map_batches(self.method.decode, self.test_codes()))

    def prior_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """n_samples prior draws z (the run's fixed draw) and their re-encodings E(G(z)), fp32 on the CPU,
        computed once per evaluation (the re-encoding and cycle metrics share them)."""
        m = self.method

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            z = m.prior.sample(self.n_samples, m.spec.latent_dim, generator=self.generator(1))
            return z, self.map_batches(lambda zz: m.encode(m.decode(zz)), z)

        return self.shared("prior", draw)

    def autocast(self):
        return autocast(self.device, self.precision)

    def batches(self, items: torch.Tensor) -> Iterator[torch.Tensor]:
        """Batches on the device: uint8 images become floats in [0, 1]; float tensors (latents) pass as they are."""
        for i in range(0, len(items), self.batch_size):
            b = items[i : i + self.batch_size].to(self.device)
            yield b.float().div_(255) if b.dtype == torch.uint8 else b

    @torch.no_grad()
    def map_batches(self, fn, images: torch.Tensor) -> torch.Tensor:
        """fn over batches of images or latents (under autocast), results concatenated on the CPU in fp32."""
        outs = []
        for x in self.batches(images):
            with self.autocast():
                outs.append(fn(x).float().cpu())
        return torch.cat(outs)

    def base_provenance(self) -> dict[str, Any]:
        """Where every value of this evaluation comes from; the split digests name the exact images (the first
        n_images of the test split whose digest is given, and the training split the run learned from)."""
        return {"device": self.device.type, **device_provenance(self.device), "dtype": self.precision, "seed": self.seed,
                "dataset": self.data.name, "split": "test", "resolution": self.data.resolution,
                "test_split_sha256": self.data.test_sha256[:16], "train_split_sha256": self.data.train_sha256[:16],
                **self.trained}

    def save_eval_images(self, name: str, images: torch.Tensor) -> Path | None:
        """Keep the exact uint8 images a distribution metric scored as PNG files (lossless) in
        run_dir/eval/<name>/, so that anyone can recompute the value with torch-fidelity on them."""
        if self.run_dir is None:
            return None
        dest = Path(self.run_dir) / "eval" / name
        tmp = dest.with_name(f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        tmp.mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img.permute(1, 2, 0).squeeze(2).numpy()).save(tmp / f"{i:06d}.png")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return dest


class Metric:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: capabilities the method must provide (see methods.base.CAPABILITIES)
    requires: ClassVar[frozenset[str]] = frozenset()
    #: result key -> direction: LOWER, HIGHER, or CLOSEST_TO_1 (a ratio to the real images; docs/metrics.md says
    #: which to choose: never "higher" for a value that noise or collapse can raise)
    keys: ClassVar[dict[str, str]] = {}
    #: metrics that need pretrained weights or a long time can be left out of the default set
    default: ClassVar[bool] = True

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        raise NotImplementedError

    def available(self, provides: frozenset[str]) -> bool:
        return self.requires <= provides

    def not_applicable(self, provides: frozenset[str]) -> list[MetricValue]:
        missing = sorted(self.requires - provides)
        return [MetricValue(k, None, {"reason": f"method lacks {', '.join(missing)}"}) for k in self.keys]


def lacking(ctx: EvalContext, needs: set[str]) -> str | None:
    """The reason a key is n/a when this method lacks some of `needs`, else None."""
    missing = sorted(needs - set(type(ctx.method).provides))
    return f"method lacks {', '.join(missing)}" if missing else None


def metric_options(ctx: EvalContext, name: str) -> dict[str, Any]:
    """Options of one metric: ctx.extras["metric_options"][name] (e.g. {"lpips": {"net": "vgg"}})."""
    return dict((ctx.extras.get("metric_options") or {}).get(name) or {})


def not_available(keys, reason: str) -> list[MetricValue]:
    """n/a for a reason other than a missing capability (a dataset without labels, a split too small)."""
    return [MetricValue(k, None, {"reason": reason}) for k in keys]


METRICS: Registry[type[Metric]] = Registry("metric", Metric)


def direction(key: str) -> str:
    """Direction of a result key, looked up across all registered metrics (lower when unknown)."""
    for _, cls in METRICS.items():
        if key in cls.keys:
            return cls.keys[key]
    return LOWER
