"""Latent priors. The paper's prior is the uniform distribution on the unit sphere S^(n-1)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.core.registry import Registry


class Prior:
    name: str = ""
    #: half-width of the box that holds the prior's support, used by stochastic clipping
    box: float = 1.0

    def sample(self, n: int, dim: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Map an arbitrary code onto the prior's support (identity where the support is all of R^n)."""
        return z

    def expected_pair_sq_dist(self, dim: int) -> float:
        """E||z - z'||^2 for independent z, z' ~ prior: the scale against which re-encoding errors are read."""
        raise NotImplementedError

    def coord_std(self, dim: int) -> float:
        """Standard deviation of one coordinate (the priors here are centred and isotropic)."""
        return (self.expected_pair_sq_dist(dim) / (2 * dim)) ** 0.5


PRIORS: Registry[type[Prior]] = Registry("prior", Prior)


@PRIORS.register()
class SpherePrior(Prior):
    """Uniform on the unit sphere: z = normalize(randn). (normalize(rand) would cover one orthant only.)"""

    name = "sphere"

    def sample(self, n, dim, generator=None, device=None):
        z = torch.randn(n, dim, generator=generator, device=device)
        return self.project(z)

    def project(self, z):
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def expected_pair_sq_dist(self, dim):
        return 2.0


@PRIORS.register()
class GaussianPrior(Prior):
    name = "gaussian"
    box = 3.0

    def sample(self, n, dim, generator=None, device=None):
        return torch.randn(n, dim, generator=generator, device=device)

    def expected_pair_sq_dist(self, dim):
        return 2.0 * dim


@PRIORS.register()
class UniformPrior(Prior):
    """Uniform on the box [-1, 1]^n (Lipton & Tripathi's setting)."""

    name = "uniform"

    def sample(self, n, dim, generator=None, device=None):
        return torch.rand(n, dim, generator=generator, device=device) * 2 - 1

    def project(self, z):
        return z.clamp(-1, 1)

    def expected_pair_sq_dist(self, dim):
        return 2.0 * dim / 3.0


def get_prior(name: str) -> Prior:
    cls: Callable[[], Prior] = PRIORS.get(name)
    return cls()
