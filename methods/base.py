"""The Method interface. A method declares phases and their losses; the runner owns every optimiser step."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.config import RunConfig, apply_overrides, section_from_dict
from bench.core.priors import Prior, get_prior
from bench.core.protocols import PROTOCOLS
from bench.core.registry import Registry

#: capabilities a method can provide and a metric can require
CAPABILITIES = ("encode", "decode", "sample")


@dataclass(frozen=True)
class ModelSpec:
    """What the backbones are built for: the data shape and the latent space."""

    channels: int
    resolution: int
    latent_dim: int = 256
    width: int = 64
    prior: str = "sphere"


@dataclass(frozen=True)
class Phase:
    """One optimisation phase: the sub-modules it updates and which learning rate they use: "g", "d", or
    "adv" (lr_g times optim.lr_adv_scale) for a generator-side adversarial phase beside a reconstruction
    or re-encoding phase."""

    name: str
    modules: tuple[str, ...]
    lr: str = "g"


@dataclass
class StepContext:
    step: int
    epoch: int
    rec_weight: float
    adv_weight: float
    #: the run's latent generator: all prior draws go through it so that a resumed run repeats exactly
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class NoParams:
    """A method without hyper-parameters of its own."""


@dataclass(frozen=True)
class Setting:
    """One of the settings a method's own paper or official code uses: a config key ("optim.lr_g", or
    "method.dropout" for the method's own parameters), its value, and where the value comes from (a paper's
    section or table, or a file of the official code)."""

    key: str
    value: Any
    source: str

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]


#: metadata of a method parameter added after runs were stored: left out of the run's config (and so its id) while
#: it has its default, so that those runs keep their ids
ADDED_LATER = {"added_later": True}


class Method(nn.Module):
    """Base class of all methods. Subclasses set the class attributes and, for each declared phase P, a method
    `P_loss(x, ctx)` returning that phase's losses."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset(CAPABILITIES)
    phases: ClassVar[tuple[Phase, ...]] = ()
    Params: ClassVar[type] = NoParams
    #: a method that reuses another method's trained checkpoint instead of training (e.g. "faae+sc")
    base_method: ClassVar[str | None] = None
    #: config values the method brings to every protocol, over the protocol's and under --set (section -> key ->
    #: value, e.g. BiGAN's optimiser {"optim": {"beta1": 0.5}}, which bigan and ali keep under quick too)
    config_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: protocol name -> this method's own parameters (method.*) under it, e.g. a latent search's step count. The
    #: `authors` table's method.* values join it for every protocol that applies the authors' settings (paper)
    protocol_params: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the settings the method's own paper or official code uses, each with its source (docs/methods.md has the
    #: table); a protocol with `authors_settings` (paper) applies them over its own, and --set over them
    authors: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, spec: ModelSpec, params: Any = None):
        super().__init__()
        self.spec = spec
        self.params = params if params is not None else self.Params()
        self.prior: Prior = get_prior(spec.prior)

    # --- training -------------------------------------------------------------------------------
    def phase_parameters(self, phase: Phase) -> list[nn.Parameter]:
        return [p for m in phase.modules for p in getattr(self, m).parameters()]

    @contextlib.contextmanager
    def substituted(self, modules: Mapping[str, nn.Module]) -> Iterator[None]:
        """The named sub-modules (e.g. "G") replaced by `modules` for the duration, then put back whatever happens.

        The runner passes the DistributedDataParallel wrappers of the networks a phase updates, which share their
        parameters, so that the phase's losses reach them through DDP (which averages their gradients over the
        processes) while frozen networks are called bare. Outside it the sub-modules are the networks themselves,
        so state_dict keys never gain DDP's "module." prefix and a checkpoint loads in a single process."""
        saved = {name: getattr(self, name) for name in modules}
        try:
            for name, module in modules.items():
                setattr(self, name, module)
            yield
        finally:
            for name, module in saved.items():
                setattr(self, name, module)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [f"{p.name}_loss" for p in cls.phases if not callable(getattr(cls, f"{p.name}_loss", None))]
        if missing:
            raise TypeError(f"{cls.__name__} declares phases without their loss methods: {', '.join(missing)}")
        # the authors' own parameters (method.*) reach the run through protocol_params, which the resolution and
        # the refinements' base-run lookup (methods.trained.default_params) both read
        own = {s.name: s.value for s in cls.__dict__.get("authors", ()) if s.section == "method"}
        if own:
            cls.protocol_params = {**cls.protocol_params, **{
                name: {**cls.protocol_params.get(name, {}), **own}
                for name, proto in PROTOCOLS.items() if proto.authors_settings}}

    # --- settings -------------------------------------------------------------------------------
    @classmethod
    def settings_for(cls, protocol: str) -> dict[str, dict[str, Any]]:
        """The config values the method brings to a protocol (section -> key -> value), applied over the
        protocol's and under --set: its `config_defaults` under every protocol, and under one that applies the
        authors' settings (paper) also the `authors` table's (method.* values travel in protocol_params)."""
        out = {section: dict(values) for section, values in cls.config_defaults.items()}
        if PROTOCOLS.get(protocol).authors_settings:
            for s in cls.authors:
                if s.section != "method":
                    out.setdefault(s.section, {})[s.name] = s.value
        return out

    @classmethod
    def default_config(cls, dataset: str, protocol: str, seed: int = 0) -> RunConfig:
        """The run's config with no override: defaults <- protocol preset <- the method's settings and
        parameters (as bench.runs.resolve resolves it before --set; train.precision left unresolved)."""
        cfg = RunConfig(method=cls.name, dataset=dataset, protocol=protocol, seed=seed)
        cfg = apply_overrides(cfg, PROTOCOLS.get(protocol)().sections(dataset))
        cfg = apply_overrides(cfg, cls.settings_for(protocol))
        params = cls.params_dict(cls.resolve_params(cls.protocol_params.get(protocol, {})))
        return dataclasses.replace(cfg, params=params)

    def phase_loss(self, phase: str, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Losses of one phase on a real batch x in [0, 1], from the method's `<phase>_loss(x, ctx)`; they must
        contain "loss", the one to minimise."""
        return getattr(self, f"{phase}_loss")(x, ctx)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n prior codes on the model's device, drawn on the generator's (training's latent stream lives on the
        training device, so a step draws its codes there without a host round trip; metrics draw theirs on
        the CPU, so that the codes of an evaluation do not depend on the device)."""
        dev = next(self.parameters()).device
        z = self.prior.sample(n, self.spec.latent_dim, generator=generator,
                              device=generator.device if generator is not None else dev)
        return z.to(dev)

    # --- what metrics use -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} does not provide encode")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} does not provide decode")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(self.sample_prior(n, generator))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @classmethod
    def resolve_params(cls, values: dict[str, Any]) -> Any:
        return section_from_dict(cls.Params, values, "method")

    @classmethod
    def params_dict(cls, params: Any) -> dict[str, Any]:
        """The parameters as the run's config holds them; one added later (ADDED_LATER) only when it is set."""
        later = {f.name: f.default for f in dataclasses.fields(params) if f.metadata.get("added_later")}
        return {k: v for k, v in dataclasses.asdict(params).items() if k not in later or v != later[k]}


METHODS: Registry[type[Method]] = Registry("method", Method)


def bce_real(logits: torch.Tensor) -> torch.Tensor:
    """-log D for a sigmoid discriminator, computed from its logits in fp32 for stability."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits, dtype=torch.float32))


def bce_fake(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - D)."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.zeros_like(logits, dtype=torch.float32))


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element, as Keras' "mse" (the paper's weights of 100 and 0.1 are set for it)."""
    return F.mse_loss(a.float(), b.float())


class ImageGANPhases:
    """The data-space GAN game that F-AAE and the plain GAN share (a mixin for a Method with G and D): "disc"
    trains D on real x against G(z); "gen" trains G to fool it (non-saturating, -log D(G(z)))."""

    def disc_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        with torch.no_grad():
            fake = self.G(z)
        real_l, fake_l = bce_real(self.D(x)), bce_fake(self.D(fake))
        return {"loss": ctx.adv_weight * (real_l + fake_l), "d_real": real_l, "d_fake": fake_l}

    def gen_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        g = bce_real(self.D(self.G(z)))
        return {"loss": ctx.adv_weight * g, "g_adv": g}
