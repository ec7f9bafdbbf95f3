"""An example plugin, deliberately outside the bench/methods packages: a plain (denoising) autoencoder.

Load it with `python -m bench run --plugin tests/plugin_example/aegan_plugin_example.py --methods plain-ae`,
with `--plugin aegan_plugin_example` when this folder is on sys.path, with the environment variable
AEGAN_BENCH_PLUGINS, or from an installed package's entry point in the group "aegan_bench.methods".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods import METHODS, Method, ModelSpec, Phase, StepContext
from methods.backbones import Encoder, Generator
from methods.base import mse


@dataclass(frozen=True)
class PlainAEParams:
    #: std of the Gaussian noise added to the input while training (0 = a plain autoencoder)
    noise: float = 0.0

    def __post_init__(self):
        if self.noise < 0:
            from bench.core.config import ConfigError

            raise ConfigError("method.noise must be >= 0")


@METHODS.register()
class PlainAE(Method):
    """Pixel reconstruction only: no adversary, so no sampling capability worth the name."""

    name = "plain-ae"
    description = "plugin example: a plain (optionally denoising) autoencoder with the shared backbones"
    provides = frozenset({"encode", "decode"})
    phases = (Phase("recon", ("E", "G"), "g"),)
    Params = PlainAEParams

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.G, self.E = Generator(spec), Encoder(spec)

    def recon_loss(self, x: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        noisy = x + self.params.noise * torch.randn_like(x) if self.params.noise else x
        err = mse(self.reconstruct(noisy), x)
        return {"loss": ctx.rec_weight * err, "recon_mse": err}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.E(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(self.prior.project(z))
