"""F-AAE, the flipped adversarial autoencoder: re-encoding error in latent space, D in data space."""

from __future__ import annotations

import torch

from .backbones import Discriminator, Encoder, Generator
from .base import METHODS, ImageGANPhases, Method, ModelSpec, Phase, StepContext, mse


@METHODS.register()
class FAAE(ImageGANPhases, Method):
    """min_{G,E} max_D E_x log D(x) + E_z log(1 - D(G(z))) + alpha E_z ||z - E(G(z))||^2.

    Each step: (1) "reencode" updates G and E on alpha * ||z - E(G(z))||^2; (2) "disc" updates D on
    real x vs G(z); (3) "gen" updates G to fool D (non-saturating form, -log D(G(z))).
    """

    name = "faae"
    description = "flipped adversarial autoencoder: latent re-encoding loss, data-space discriminator"
    phases = (Phase("reencode", ("G", "E"), "g"), Phase("disc", ("D",), "d"), Phase("gen", ("G",), "adv"))

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.G, self.D = Generator(spec), Discriminator(spec)
        self.E = Encoder(spec, out_scale=self.prior.coord_std(spec.latent_dim))

    def reencode_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        err = mse(self.E(self.G(z)), z)
        return {"loss": ctx.rec_weight * err, "reencode_mse": err}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # un-normalised encoder output: morphing combines these before normalising (paper section 4.4)
        return self.E(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(self.prior.project(z))
