"""Methods: one module per method, all registered in METHODS; import order is display order."""

# isort: off
from . import faae  # noqa: F401  (importing registers)
from . import aae  # noqa: F401
# isort: on
from .base import METHODS, Method, ModelSpec, Phase, StepContext

__all__ = ["METHODS", "Method", "ModelSpec", "Phase", "StepContext"]
