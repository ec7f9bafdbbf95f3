"""A run's result file (runs/<id>/result.json): its run row and metric rows exactly as the store holds them.

Written atomically whenever the runner or `bench eval` has stored something new for the run, so the run
directory alone says what the run produced: workers on other machines (or with other stores) leave files
that `bench collect` upserts into one store. Strict JSON; the JSON columns (config, packages, provenance)
stay the text the store holds, and a non-finite metric value (PSNR of identical images is +inf) is written
as the string "inf", "-inf" or "nan", since strict JSON has no such numbers and null means n/a.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import strict_json
from .store import METRIC_COLUMNS, RUN_COLUMNS, Store
from .tempfiles import replace_text

RESULT = "result.json"
FORMAT = "aegan-bench run result"
VERSION = 1
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ResultFileError(ValueError):
    """A result file that cannot be read back (truncated, edited, another format); names the file."""


def _encode_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_result(store: Store, run_id: str, run_dir: str | Path) -> Path | None:
    """Write run_dir/result.json from what the store holds for the run (None when it holds nothing)."""
    record = store.run_record(run_id)
    if record is None:
        return None
    metrics = [{**m, "value": _encode_value(m["value"])} for m in record["metrics"]]
    doc = {"format": FORMAT, "version": VERSION, "run": record["run"], "metrics": metrics}
    path = Path(run_dir) / RESULT
    replace_text(path, strict_json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """The record ({"run": ..., "metrics": [...]}) of a result file, checked column by column."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultFileError(f"{path}: not a readable result file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResultFileError(f"{path}: not an aegan-bench result file (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ResultFileError(f"{path}: result file version {doc.get('version')!r}; this version reads {VERSION}")
    run, metrics = doc.get("run"), doc.get("metrics")
    if not isinstance(run, dict) or set(run) != set(RUN_COLUMNS):
        raise ResultFileError(f"{path}: \"run\" must hold exactly the columns {', '.join(RUN_COLUMNS)}")
    if not isinstance(run["run_id"], str) or not run["run_id"]:
        raise ResultFileError(f"{path}: \"run\" has no run_id")
    if not isinstance(metrics, list):
        raise ResultFileError(f"{path}: \"metrics\" must be a list of metric rows")
    rows = []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or set(m) != set(METRIC_COLUMNS) or m["run_id"] != run["run_id"]:
            raise ResultFileError(f"{path}: metric row {i} must hold exactly the columns {', '.join(METRIC_COLUMNS)}"
                                  f" and run_id {run['run_id']!r}")
        value = m["value"]
        if isinstance(value, str):
            if value not in _NONFINITE:
                raise ResultFileError(f"{path}: metric row {i} has value {value!r} (a number, null, \"inf\", "
                                      "\"-inf\" or \"nan\")")
            value = _NONFINITE[value]
        rows.append({**m, "value": value})
    return {"run": {c: run[c] for c in RUN_COLUMNS}, "metrics": rows}
