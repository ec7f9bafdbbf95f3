"""Shared DCGAN-sized backbones following the paper's section 3.2, used by every method.

G: linear -> 4x4 map, then [2x nearest up-sampling, 3x3 conv, BatchNorm, LeakyReLU] until the output
   size, a 3x3 conv and a sigmoid. Channels: 4*w at 4x4, halving per stage, never below w.
E: the mirror image: [3x3 conv, BatchNorm, LeakyReLU, 2x2 max-pool] down to 4x4, flatten, linear.
D: DCGAN discriminator: stride-2 4x4 convs (BatchNorm from the second on), LeakyReLU, a linear logit.
   The sigmoid of the paper's D is folded into the loss (BCE with logits) for numerical stability.
For 32x32 and w=64: G 1.46M, E 1.46M, D 0.73M parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import ModelSpec

LEAK = 0.2


def _stage_channels(spec: ModelSpec) -> list[int]:
    """Channels per resolution from 4x4 up to the output size."""
    stages = int(math.log2(spec.resolution // 4))
    if 4 * 2**stages != spec.resolution:
        raise ValueError(f"resolution must be 4 * 2^k, got {spec.resolution}")
    return [max(spec.width * 4 // 2**i, spec.width) for i in range(stages + 1)]


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(LEAK, inplace=True)]


class Generator(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        ch = _stage_channels(spec)
        self.c0 = ch[0]
        self.fc = nn.Linear(spec.latent_dim, ch[0] * 16, bias=False)
        self.bn0 = nn.BatchNorm2d(ch[0])
        layers: list[nn.Module] = []
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn(cin, cout)]
        layers += [nn.Conv2d(ch[-1], spec.channels, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.act = nn.LeakyReLU(LEAK, inplace=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        return self.net(self.act(self.bn0(h)))


class Encoder(nn.Module):
    """Outputs are in units of the prior's per-coordinate scale (`out_scale`, 1/sqrt(n) on the sphere):
    a default-initialised last layer would start about 16x too large for the 256-d sphere, and the
    re-encoding loss then spends its first hundreds of steps only shrinking the outputs."""

    def __init__(self, spec: ModelSpec, out_dim: int | None = None, out_scale: float = 1.0):
        super().__init__()
        self.out_scale = out_scale
        ch = _stage_channels(spec)[::-1]
        layers: list[nn.Module] = [*_conv_bn(spec.channels, ch[0])]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.MaxPool2d(2), *_conv_bn(cin, cout)]
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(ch[-1] * 16, out_dim or spec.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1)) * self.out_scale


class DiscriminatorTrunk(nn.Module):
    """The image discriminator's convolutional trunk; the joint discriminators of BiGAN/ALI reuse it."""

    def __init__(self, spec: ModelSpec, dropout: float = 0.0):
        super().__init__()
        ch = _stage_channels(spec)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, ch[0], 4, 2, 1), nn.LeakyReLU(LEAK, inplace=True)]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(LEAK, inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        # the last stage ends at 2x2: one more stride-2 conv than G has up-sampling stages
        self.net = nn.Sequential(*layers)
        self.out_features = ch[-1] * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Discriminator(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.trunk = DiscriminatorTrunk(spec)
        self.fc = nn.Linear(self.trunk.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x)).squeeze(1)


class LatentDiscriminator(nn.Module):
    """AAE's discriminator on codes: an MLP without BatchNorm (BatchNorm here is known to stall it)."""

    def __init__(self, latent_dim: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(LEAK, inplace=True),
            nn.Linear(hidden, hidden), nn.LeakyReLU(LEAK, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


class JointDiscriminator(nn.Module):
    """BiGAN/ALI's discriminator on pairs (x, z): the image discriminator's trunk for x, an MLP for z,
    the two feature vectors concatenated, then an MLP to one logit. No BatchNorm on the latent path
    (as in LatentDiscriminator); optional dropout in every hidden layer and on the inputs (ALI uses both).
    The input dropout is functional, so that the module list (and the checkpoints' keys) stay as they were."""

    def __init__(self, spec: ModelSpec, hidden: int = 512, dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        self.input_dropout = input_dropout
        self.trunk = DiscriminatorTrunk(spec, dropout)

        def drop() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout else []

        self.z_net = nn.Sequential(
            nn.Linear(spec.latent_dim, hidden), nn.LeakyReLU(LEAK, inplace=True), *drop(),
            nn.Linear(hidden, hidden), nn.LeakyReLU(LEAK, inplace=True), *drop(),
        )
        self.joint = nn.Sequential(
            nn.Linear(self.trunk.out_features + hidden, hidden), nn.LeakyReLU(LEAK, inplace=True), *drop(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.input_dropout:
            x = nn.functional.dropout(x, self.input_dropout, self.training)
            z = nn.functional.dropout(z, self.input_dropout, self.training)
        return self.joint(torch.cat([self.trunk(x), self.z_net(z)], dim=1)).squeeze(1)
