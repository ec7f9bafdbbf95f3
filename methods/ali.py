"""ALI (Dumoulin et al. 2016): BiGAN's game with a reparameterised stochastic encoder and dropout in D."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.core.config import ConfigError

from .backbones import Encoder
from .base import METHODS, ModelSpec
from .bigan import BiGAN

#: bounds on log sigma: exp(-12) is far below any prior's scale, exp(2) far above (sigma = 7.4)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -12.0, 2.0


@dataclass(frozen=True)
class ALIParams:
    #: dropout probability in every hidden layer of the joint discriminator
    dropout: float = 0.2

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.dropout}")


class GaussianEncoder(nn.Module):
    """The shared Encoder with 2 * latent_dim outputs read as (mu, log sigma); log sigma is clamped.

    The log-sigma bias starts at log of the prior's per-coordinate standard deviation, so the initial
    posterior noise has the prior's scale (for ALI's Gaussian prior that is log sigma = 0; for the
    256-dimensional sphere it is sigma = 1/16 instead of a noise 16 times larger than the codes).
    """

    def __init__(self, spec: ModelSpec, prior_std: float):
        super().__init__()
        self.latent_dim = spec.latent_dim
        self.net = Encoder(spec, out_dim=2 * spec.latent_dim)
        with torch.no_grad():
            self.net.fc.bias[spec.latent_dim:].fill_(math.log(prior_std))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        mu, log_sigma = h[:, : self.latent_dim], h[:, self.latent_dim :]
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


@METHODS.register()
class ALI(BiGAN):
    """Adversarially learned inference: BiGAN's phases and losses (see `BiGAN`), but the code paired with
    a real x is a reparameterised sample E(x) = mu(x) + sigma(x) * eps, eps ~ N(0, I), and the joint
    discriminator has dropout (`method.dropout`, default 0.2). As for BiGAN, the sample is projected onto
    the prior's support before D sees it. eps is drawn from the run's latent generator (ctx.generator), so
    a seeded run repeats exactly, also after resuming; D's dropout masks use torch's global RNG, which the
    runner seeds and checkpoints.

    For evaluation, `encode(x)` is deterministic: it returns the projected posterior mean, project(mu(x)).
    """

    name = "ali"
    description = "ALI: BiGAN's joint game with a stochastic (reparameterised) encoder and dropout in D"
    Params = ALIParams

    def build_encoder(self, spec: ModelSpec) -> nn.Module:
        prior_std = self.prior.coord_std(spec.latent_dim)
        return GaussianEncoder(spec, prior_std)

    def discriminator_dropout(self) -> float:
        return self.params.dropout

    def posterior_sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        mu, log_sigma = self.E(x)
        # eps on the generator's device (the CPU for the run's latent generator), then moved: same draws on any device
        dev = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=dev).to(mu.device, mu.dtype)
        return mu + log_sigma.exp() * eps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.E(x)
        return self.prior.project(mu)
