"""AAE (Makhzani et al. 2015) as the F-AAE paper uses it: pixel reconstruction, latent-space discriminator."""

from __future__ import annotations

import torch

from .backbones import Encoder, Generator, LatentDiscriminator
from .base import METHODS, Method, ModelSpec, Phase, StepContext, bce_fake, bce_real, mse
from .faae import FAAE_PAPER_SETTINGS


@METHODS.register()
class AAE(Method):
    """Deterministic encoder. Phases: "recon" updates E and G on weight * ||x - G(E(x))||^2; "disc"
    updates the latent D with prior samples as real and E(x) as fake; "gen" updates E to fool it."""

    name = "aae"
    description = "adversarial autoencoder: pixel reconstruction loss, latent-space discriminator"
    phases = (Phase("recon", ("E", "G"), "g"), Phase("disc", ("D",), "d"), Phase("gen", ("E",), "adv"))
    # the F-AAE paper trains AAE with F-AAE's settings ("The training of AAE and F-AAE in our experiments always
    # take the same parameters", section 4.1): the comparison this suite reproduces. Makhzani et al.'s own optimiser
    # (their MNIST/SVHN settings) is not used: it was not checked against their paper here (docs/methods.md)
    authors = FAAE_PAPER_SETTINGS

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.G, self.E = Generator(spec), Encoder(spec, out_scale=self.prior.coord_std(spec.latent_dim))
        self.D = LatentDiscriminator(spec.latent_dim)

    def recon_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        err = mse(self.G(self.E(x)), x)
        return {"loss": ctx.rec_weight * err, "recon_mse": err}

    def disc_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        with torch.no_grad():
            z_hat = self.E(x)
        real_l, fake_l = bce_real(self.D(z)), bce_fake(self.D(z_hat))
        return {"loss": ctx.adv_weight * (real_l + fake_l), "d_real": real_l, "d_fake": fake_l}

    def gen_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        g = bce_real(self.D(self.E(x)))
        return {"loss": ctx.adv_weight * g, "e_adv": g}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.E(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)
