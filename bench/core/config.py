"""Typed, frozen run configuration. Every run directory holds its resolved config; its hash names the run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from .paths import safe_name
from .priors import PRIORS


class ConfigError(ValueError):
    """A bad configuration value or key; the message names what is valid."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


#: "auto" is resolved to the other two by the device when a run's config is resolved (bench.core.device)
PRECISIONS = ("auto", "bf16", "fp32", "tf32")


@dataclass(frozen=True)
class DataConfig:
    #: image side in pixels; 0 keeps the dataset's own default
    resolution: int = 0
    #: dataset-specific split rule ("default", or e.g. CelebA's "official")
    split: str = "default"
    #: cap on training images (0 = all); lets small protocols subsample large datasets
    max_train: int = 0

    def __post_init__(self):
        _check(self.resolution in (0, 32, 64), f"data.resolution must be 0 (dataset default), 32 or 64, got {self.resolution}")
        _check(self.max_train >= 0, "data.max_train must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 256
    prior: str = "sphere"
    #: channel width of the shared DCGAN-sized backbones (G, E, D all scale with it)
    width: int = 64

    def __post_init__(self):
        _check(self.latent_dim > 0, "model.latent_dim must be positive")
        _check(self.width >= 4, "model.width must be >= 4")
        _check(self.prior in PRIORS, f"model.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with Keras-style inverse-time decay: lr_t = lr_0 / (1 + decay * t), t = updates so far."""

    lr_g: float = 3e-4
    lr_d: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    decay: float = 1e-4
    #: "network": one Adam per network (G, E, D), shared by every phase that updates it, so the loss
    #: weights set the balance between phases; "phase": one Adam per phase, as with separately compiled
    #: Keras models, where Adam's scale invariance makes a phase's constant loss weight a no-op
    state: str = "phase"
    #: learning rate of a generator-side adversarial phase that sits beside a reconstruction or
    #: re-encoding phase (F-AAE's G, AAE's E learning to fool D), relative to lr_g. With one Adam per phase
    #: the loss weights cannot set the balance between the two phases (Adam's steps are scale-free); this does
    lr_adv_scale: float = 1.0

    def __post_init__(self):
        _check(self.lr_g > 0 and self.lr_d > 0, "optim.lr_g and optim.lr_d must be positive")
        _check(self.lr_adv_scale > 0, "optim.lr_adv_scale must be positive")
        _check(self.state in ("network", "phase"), f"optim.state must be 'network' or 'phase', got {self.state!r}")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1/beta2 must be in [0, 1)")
        _check(self.decay >= 0, "optim.decay must be >= 0")

    def lr(self, key: str) -> float:
        """The learning rate a phase's key names (see methods.base.Phase)."""
        return {"g": self.lr_g, "d": self.lr_d, "adv": self.lr_g * self.lr_adv_scale}[key]


@dataclass(frozen=True)
class LossConfig:
    """Weights of the reconstruction / re-encoding term and of the adversarial term."""

    rec_weight: float = 100.0
    adv_weight: float = 0.1
    #: the paper's ImageNet schedule: rec weight `warmup_rec_weight` for the first `warmup_epochs` epochs
    warmup_rec_weight: float = 100.0
    warmup_epochs: int = 0

    def __post_init__(self):
        _check(self.rec_weight >= 0 and self.adv_weight >= 0, "loss weights must be >= 0")
        _check(self.warmup_epochs >= 0, "loss.warmup_epochs must be >= 0")

    def rec_weight_at(self, epoch: int) -> float:
        return self.warmup_rec_weight if epoch < self.warmup_epochs else self.rec_weight


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    #: stop after this many steps (0 = run all epochs)
    max_steps: int = 0
    batch_size: int = 64
    #: "bf16": autocast; "fp32": plain eager in IEEE fp32 (TF32 off on CUDA); "tf32": fp32 with TF32 matmuls and
    #: convolutions on GPUs that have it (fp32 elsewhere); "auto": bf16 where the device computes it natively (CUDA
    #: GPUs that support it, CPUs with AVX512-BF16 or AMX), else fp32. A resolved config holds bf16, fp32 or tf32.
    precision: str = "auto"
    channels_last: bool = True
    log_every: int = 50
    sample_every: int = 1000
    #: wall-clock seconds between checkpoints (one is always written at the end of an epoch)
    ckpt_every_s: float = 120.0
    #: deterministic kernels (cuDNN, cuBLAS, PyTorch's deterministic ops) so that a resumed run equals an
    #: uninterrupted one on CUDA too (bench.core.device.deterministic); the CPU is deterministic either way
    deterministic: bool = True

    def __post_init__(self):
        _check(self.epochs > 0, "train.epochs must be positive")
        _check(self.max_steps >= 0, "train.max_steps must be >= 0")
        _check(self.batch_size > 1, "train.batch_size must be > 1")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}")
        _check(self.log_every > 0 and self.sample_every > 0, "train.log_every and train.sample_every must be positive")


@dataclass(frozen=True)
class EvalConfig:
    #: held-out images scored per metric (0 = the whole test split)
    n_images: int = 10000
    batch_size: int = 250
    #: generated samples for sample-based metrics (FID/KID of G(z))
    n_samples: int = 10000
    #: with no --metrics, also run the metrics that need pretrained networks (LPIPS, FID/KID)
    pretrained: bool = True

    def __post_init__(self):
        _check(self.n_images >= 0 and self.n_samples >= 0, "eval image counts must be >= 0")
        _check(self.batch_size > 0, "eval.batch_size must be positive")


@dataclass(frozen=True)
class OriginConfig:
    """Where a run's settings come from, for the report's settings block: set by the variants `bench tune` writes
    (bench.tune), empty otherwise. It changes nothing that is trained."""

    #: the study that chose the settings, with its budget, objective and validation split ("" = none)
    study: str = ""
    #: comma-separated config keys the study chose ("optim.lr_g,optim.beta1")
    keys: str = ""


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "origin": OriginConfig,
}
#: sections that do not change what is trained, so they stay out of the run's identity hash
UNHASHED_SECTIONS = ("eval", "origin")


def config_hash(config: dict[str, Any], without: tuple[str, ...] = UNHASHED_SECTIONS) -> str:
    """12 hex digits of sha256 over a resolved config (as to_dict gives it) less the `without` entries: with the
    default, the identity of a run's training (the evaluation settings are compared through provenance)."""
    d = {k: v for k, v in config.items() if k not in without}
    if d.get("train", {}).get("deterministic") is True:  # added later: hashed only when off, so that runs stored
        d["train"] = {k: v for k, v in d["train"].items() if k != "deterministic"}  # before it keep their ids
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunConfig:
    method: str
    dataset: str
    protocol: str
    seed: int = 0
    #: a named variant of the method ("" = the method itself)
    variant: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    #: method-specific hyper-parameters, validated against the method's own Params dataclass
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.variant or self.method

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        for name, sec in SECTIONS.items():
            if name in d:
                d[name] = section_from_dict(sec, d[name], name)
        unknown = set(d) - {f.name for f in fields(cls)}
        _check(not unknown, f"unknown config keys {sorted(unknown)}")
        return cls(**d)

    def config_hash(self) -> str:
        return config_hash(self.to_dict())

    def run_id(self) -> str:
        """Also the run directory's name: made safe, since a config may come from a stored config.json."""
        return safe_name(f"{self.label}-{self.dataset}-{self.protocol}-s{self.seed}-{self.config_hash()}")


def section_from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(valid))
    _check(not unknown, f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; valid: {', '.join(f'{where}.{k}' for k in valid)}")
    return cls(**{k: _convert(cls, k, v, where) for k, v in d.items()})


def _convert(cls: type, key: str, value: Any, where: str) -> Any:
    """Coerce a value (possibly a CLI string) to the declared field type."""
    typ = typing.get_type_hints(cls)[key]
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            if typ in (int, float):
                return typ(text)
            return json.loads(text)
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(f"{where}.{key} expects {getattr(typ, '__name__', typ)}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, bool, str) and not isinstance(value, typ):
        raise ConfigError(f"{where}.{key} expects {typ.__name__}, got {value!r}")
    if typ is int and isinstance(value, bool):
        raise ConfigError(f"{where}.{key} expects int, got {value!r}")
    return value


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """['train.epochs=3', 'method.steps=50'] -> {'train': {'epochs': '3'}, 'method': {'steps': '50'}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        _check(bool(sep and dot and section and name), f"override {item!r} must look like section.key=value (e.g. train.epochs=3)")
        _check(section in SECTIONS or section == "method",
               f"unknown config section {section!r} in {item!r}; valid: {', '.join([*SECTIONS, 'method'])}")
        out.setdefault(section, {})[name] = value
    return out


def apply_overrides(cfg: RunConfig, sections: dict[str, dict[str, Any]]) -> RunConfig:
    """Return cfg with section values replaced; every key is validated against its dataclass."""
    changes: dict[str, Any] = {}
    for name, values in sections.items():
        if name == "method":
            changes["params"] = {**cfg.params, **values}
            continue
        current = dataclasses.asdict(getattr(cfg, name))
        current.update(values)
        changes[name] = section_from_dict(SECTIONS[name], current, name)
    return dataclasses.replace(cfg, **changes)
