"""JSON for other programs (`--json` outputs): strict RFC 8259, which has no Infinity or NaN.

Python's json writes non-finite floats as the bare words Infinity and NaN, which strict parsers (jq, JSON.parse,
Go, serde) reject. Here they become null: PSNR of identical images, an infinite tolerance or relative change."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """obj with every non-finite float (also inside dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps that writes strict JSON: non-finite floats as null, other objects by str()."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)
