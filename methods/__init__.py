"""Methods: one module per method, all registered in METHODS; import order is display order."""

# isort: off
from . import faae  # noqa: F401  (importing registers)
from . import aae  # noqa: F401
from . import bigan  # noqa: F401
from . import ali  # noqa: F401
from . import latent_recovery  # noqa: F401  (latent-recovery, then the +sc refinements)
# isort: on
from .base import METHODS, Method, ModelSpec, Phase, StepContext

__all__ = ["METHODS", "Method", "ModelSpec", "Phase", "StepContext"]
