"""What a study optimises: result keys of the registered metrics, each in its direction."""

from __future__ import annotations

import math

from bench.core.errors import UsageError
from bench.core.provenance import CLOSEST_TO_1, HIGHER
from metrics import METRICS, direction


def objective_directions(keys: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(key, the key's direction, what the study optimises) per objective key: lower and higher keys as they are,
    closest-to-1 keys as |ln value|, minimised."""
    known = {k for _, cls in METRICS.items() for k in cls.keys}
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        raise UsageError(f"--objective: unknown key(s) {', '.join(unknown) or '(none)'}; valid: "
                         f"{', '.join(sorted(known))}")
    return [(k, d, "maximize" if d == HIGHER else "minimize") for k in keys for d in [direction(k)]]


def score(key: str, value: float) -> float:
    """The value the study optimises for one key."""
    if direction(key) == CLOSEST_TO_1:
        return abs(math.log(value)) if value > 0 else math.inf
    return value


def objective_metrics(keys: tuple[str, ...]) -> list[str]:
    return [name for name, cls in METRICS.items() if set(cls.keys) & set(keys)]
