"""ALI (Dumoulin et al. 2016): BiGAN's game with a reparameterised stochastic encoder and dropout in D."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.core.config import ConfigError

from .backbones import Encoder
from .base import ADDED_LATER, METHODS, ModelSpec, Setting
from .bigan import BiGAN

_CODE = "IshmaelBelghazi/ALI (the official code), experiments/ali_cifar10.py"
_TABLE = "Dumoulin et al. 2017 (ALI), appendix A, the CIFAR-10 hyperparameter table (paper/ in the official code)"

#: bounds on log sigma: exp(-12) is far below any prior's scale, exp(2) far above (sigma = 7.4)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -12.0, 2.0


@dataclass(frozen=True)
class ALIParams:
    #: dropout probability in every hidden layer of the joint discriminator
    dropout: float = 0.2
    #: dropout probability on the discriminator's inputs, x and z (ALI's own: 0.2)
    input_dropout: float = field(default=0.0, metadata=ADDED_LATER)

    def __post_init__(self):
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.input_dropout < 1.0):
            raise ConfigError(f"method.dropout and method.input_dropout must be in [0, 1), got {self.dropout} and "
                              f"{self.input_dropout}")


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
    # under `paper`, ALI's own optimiser, prior and dropout (the CIFAR-10 experiment). Not applied: batch 100, the
    # 64-d latent, maxout units and LeakyReLU slope 0.1 in the nets, N(0, 0.01) initialisation, 6,475 epochs (the
    # shared backbones and the protocol's budget)
    authors = (
        Setting("optim.lr_g", 1e-4, f"{_CODE}: LEARNING_RATE = 1e-4; {_TABLE}: Adam alpha = 10^-4"),
        Setting("optim.lr_d", 1e-4, f"{_CODE}: one step rule, Adam(learning_rate=LEARNING_RATE, beta1=BETA1), for "
                                    "the discriminator and the generator (ali/algorithms.py)"),
        Setting("optim.beta1", 0.5, f"{_CODE}: BETA1 = 0.5; {_TABLE}: beta1 = 0.5"),
        Setting("optim.beta2", 0.999, f"{_TABLE}: beta2 = 10^-3, in Blocks' 1 - beta2 convention (the code leaves "
                                      "Blocks' default)"),
        Setting("optim.decay", 0.0, f"{_CODE}: a constant rate, no schedule"),
        Setting("model.prior", "gaussian", f"{_CODE}: z = ali.theano_rng.normal(size=(batch, NLAT, 1, 1))"),
        Setting("method.input_dropout", 0.2, f"{_CODE}: apply_dropout(cg, inputs, 0.2) on the inputs of the x and z "
                                             f"discriminators' first layers; {_TABLE}: dropout 0.2"),
        Setting("method.dropout", 0.5, f"{_CODE}: apply_dropout(cg, inputs, 0.5) on the inputs of the "
                                       f"discriminator's other layers; {_TABLE}: dropout 0.5"),
    )

    def build_encoder(self, spec: ModelSpec) -> nn.Module:
        prior_std = self.prior.coord_std(spec.latent_dim)
        return GaussianEncoder(spec, prior_std)

    def discriminator_dropout(self) -> tuple[float, float]:
        return self.params.dropout, self.params.input_dropout

    def posterior_sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        mu, log_sigma = self.E(x)
        # eps on the generator's device (training's latent stream lives on the training device: no host copy)
        dev = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=dev).to(mu.device, mu.dtype)
        return mu + log_sigma.exp() * eps

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.E(x)
        return self.prior.project(mu)
