"""BiGAN (Donahue et al. 2016): one discriminator on joint pairs (x, E(x)) vs (G(z), z), no reconstruction loss."""

from __future__ import annotations

import torch

from .backbones import Encoder, Generator, JointDiscriminator
from .base import METHODS, Method, ModelSpec, Phase, Setting, StepContext, bce_fake, bce_real

_CODE = "jeffdonahue/bigan (the official code)"


@METHODS.register()
class BiGAN(Method):
    """min_{G,E} max_D E_x log D(x, E(x)) + E_z log(1 - D(G(z), z)), deterministic encoder.

    Phases: "disc" updates D on real pairs (x, E(x)) against fake pairs (G(z), z); "gen" updates G and E
    together to fool it with the labels flipped (non-saturating: -log(1 - D(x, E(x))) - log D(G(z), z)).
    Both losses carry the protocol's adversarial weight (loss.adv_weight), as for the other methods; there
    is no reconstruction term, so loss.rec_weight is unused.

    The encoder's output is projected onto the prior's support (`prior.project`) before D sees it. With
    the sphere prior every z of a fake pair has norm exactly 1, so an unprojected E(x) would let D separate
    the pairs by the norm alone, and E's gradient would mostly chase the norm instead of matching G's
    inverse. Projecting makes only the direction of E(x) matter, so E and G play the game the method
    intends on the same support. (For the Gaussian prior the projection is the identity.) `encode` returns
    the same projected code, so reconstructions G(E(x)) and re-encoding errors use what D was shown.
    """

    name = "bigan"
    description = "BiGAN: joint discriminator on (x, E(x)) vs (G(z), z), deterministic encoder, no recon loss"
    phases = (Phase("disc", ("D",), "d"), Phase("gen", ("G", "E"), "g"))
    # BiGAN's own optimiser (Donahue et al.: Adam 2e-4, beta1 0.5, the same for both players). With the
    # F-AAE paper's 3e-4 / 1e-3 and beta1 0.9, D won within 200 steps on CIFAR-10 `quick` (its loss
    # 0.008) and G(E(x)) was worse than a random image's reconstruction (MSE 0.171 vs 0.148); with these
    # settings, 0.118 vs 0.131. ALI inherits them.
    config_defaults = {"optim": {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5}}
    # under `paper`, everything of BiGAN's own that the shared backbones can take. Not applied: the L2 weight decay
    # 2.5e-5 (train_gan.py --decay), batch 128, the 200-d latent (the suite's backbones share one latent size) and
    # the exponential decay of the rate to 0.01x over the last --decay_epochs (the suite's one schedule is Keras'
    # inverse-time decay; the rate is kept at its initial value, as in BiGAN's first --epochs)
    authors = (
        Setting("optim.lr_g", 2e-4, f"{_CODE}, train_gan.py: --learning_rate default 0.0002"),
        Setting("optim.lr_d", 2e-4, f"{_CODE}, train_gan.py: one --learning_rate (and --optimizer) for every net"),
        Setting("optim.beta1", 0.5, f"{_CODE}, train_gan.py: --momentum default 0.5, passed as Adam's b1"),
        Setting("optim.beta2", 0.999, f"{_CODE}, lib/updates.py: Adam(b2=0.999)"),
        Setting("optim.decay", 0.0, f"{_CODE}, train_gan.py: the rate is constant for --epochs (200 in "
                                    "train_imagenet.sh) before its decay, which is not applied here"),
        Setting("model.prior", "uniform", f"{_CODE}, train_imagenet.sh: NOISE=u-200; dist.py: UniformDistribution "
                                          "on (-1, +1)"),
    )

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.G, self.E = Generator(spec), self.build_encoder(spec)
        hidden, inputs = self.discriminator_dropout()
        self.D = JointDiscriminator(spec, dropout=hidden, input_dropout=inputs)

    # --- what ALI changes ---------------------------------------------------------------------------
    def build_encoder(self, spec: ModelSpec) -> torch.nn.Module:
        return Encoder(spec)

    def discriminator_dropout(self) -> tuple[float, float]:
        """Dropout in the joint discriminator: (on the inputs of its hidden layers, on its inputs x and z)."""
        return 0.0, 0.0

    def posterior_sample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The code paired with a real x during training (before projection)."""
        return self.E(x)

    # --- training -------------------------------------------------------------------------------------
    def disc_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        with torch.no_grad():
            z_real = self.prior.project(self.posterior_sample(x, ctx.generator))
            x_fake = self.G(z)
        real_l, fake_l = bce_real(self.D(x, z_real)), bce_fake(self.D(x_fake, z))
        return {"loss": ctx.adv_weight * (real_l + fake_l), "d_real": real_l, "d_fake": fake_l}

    def gen_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        z = self.sample_prior(x.shape[0], ctx.generator)
        z_real = self.prior.project(self.posterior_sample(x, ctx.generator))
        e_l, g_l = bce_fake(self.D(x, z_real)), bce_real(self.D(self.G(z), z))
        return {"loss": ctx.adv_weight * (e_l + g_l), "e_adv": e_l, "g_adv": g_l}

    # --- what metrics use -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.prior.project(self.E(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(self.prior.project(z))
