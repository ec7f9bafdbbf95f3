"""A run's result file (runs/<id>/result.json): its run row and metric rows exactly as the store holds them.

Written atomically whenever the runner or `bench eval` has stored something new for the run, so the run
directory alone says what the run produced: workers on other machines (or with other stores) leave files
that `bench collect` upserts into one store. Strict JSON; the JSON columns (config, packages, provenance)
stay the text the store holds, and an infinite metric value (PSNR of identical images is +inf) is written
as the string "inf" or "-inf", since strict JSON has no such numbers; null means n/a, and NaN is written as
null too (SQLite stores a NaN as NULL: no value).

Reading one back trusts nothing in it: the file must be a regular file of at most MAX_BYTES, it is parsed by
pydantic's JSON parser (jiter: no Python recursion, nesting refused beyond ~200 levels) against the declared
schema below (every column typed and bounded: SQLite's 64-bit integers, finite floats, the suite's statuses and
name rules, JSON objects in the JSON columns), and it must belong to its run: the run id equals its directory's
name and the id recomputed from its config, and every metric row names that run.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from . import strict_json
from .config import config_hash
from .paths import check_regular, display, safe_name
from .schema import Name, first_problem
from .store import METRIC_COLUMNS, RUN_COLUMNS, SEED_LIMIT, STATUSES, Store
from .tempfiles import replace_text

RESULT = "result.json"
FORMAT = "aegan-bench run result"
VERSION = 1
_INFINITE = {"inf": math.inf, "-inf": -math.inf}
#: a result file holds one run's rows (some 10 kB); anything far larger is not one, and is not read
MAX_BYTES = 4 * 2**20
MAX_METRIC_ROWS = 10_000
INT64_MAX = 2**63 - 1


class ResultFileError(ValueError):
    """A result file that cannot be collected (damaged, edited, another format, another run's); names the file."""


def encode_value(v: Any) -> Any:
    """A metric value for strict JSON: +-inf as "inf" / "-inf"; NaN as null (n/a, as SQLite stores it)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def decode_value(v: Any) -> Any:
    """encode_value undone: "inf" and "-inf" become floats again; anything else is returned as it is."""
    return _INFINITE[v] if isinstance(v, str) and v in _INFINITE else v


# --- the schema ------------------------------------------------------------------------------------------------
def _json_object(text: str) -> str:
    """The text of a JSON column must be a JSON object that the store's readers (json.loads) read back."""
    # jiter first: it bounds nesting without recursing, so json.loads below never meets a deep document
    pydantic_core.from_json(text)
    if not isinstance(json.loads(text), dict):
        raise ValueError("must be the text of a JSON object")
    return text


#: free text (messages, devices, paths): bounded, no NUL (PostgreSQL's text cannot hold it)
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=20_000)]
JsonObject = Annotated[str, StringConstraints(max_length=MAX_BYTES), AfterValidator(_json_object)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Value = Annotated[float, Field(allow_inf_nan=False)] | Literal["inf", "-inf"] | None
#: the runs.tags column: sorted, comma-joined --tag words (bench.compare.check_tags)
Tags = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9_.:+\-]+(,[A-Za-z0-9_.:+\-]+)*)?$", max_length=20_000)]

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


class RunRow(BaseModel):
    """A row of the store's runs table."""

    model_config = _STRICT
    run_id: Name
    method: Name
    variant: Name
    dataset: Name
    protocol: Name
    seed: Seed
    config_json: JsonObject
    config_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}$")]
    code_version: Text
    packages_json: JsonObject
    device: Text
    dtype: Name
    status: Literal[STATUSES]  # type: ignore[valid-type]
    run_dir: Text
    steps: Count
    train_seconds: Seconds
    message: Text
    tags: Tags
    created: Timestamp
    updated: Timestamp


class MetricRow(BaseModel):
    """A row of the store's metrics table."""

    model_config = _STRICT
    run_id: Name
    metric: Name
    key: Name
    value: Value
    provenance_json: JsonObject
    created: Timestamp


class ResultDoc(BaseModel):
    model_config = _STRICT
    format: Literal[FORMAT]  # type: ignore[valid-type]
    version: Literal[VERSION]  # type: ignore[valid-type]
    run: RunRow
    metrics: Annotated[list[MetricRow], Field(max_length=MAX_METRIC_ROWS)]

    @model_validator(mode="after")
    def _one_run(self) -> ResultDoc:
        # one run's file never carries another run's rows, and one value per key (the table's primary key)
        others = sorted({m.run_id for m in self.metrics} - {self.run.run_id})
        if others:
            raise ValueError(f"metric rows name other runs ({', '.join(others[:3])}) than {self.run.run_id}")
        twice = sorted(k for k, n in Counter(m.key for m in self.metrics).items() if n > 1)
        if twice:
            raise ValueError(f"metric key(s) {', '.join(twice[:3])} given more than once")
        return self


class ConfigIdentity(BaseModel):
    """What of a run's config (config_json) makes its run id; the other sections are hashed as they are."""

    model_config = ConfigDict(strict=True, extra="allow")
    method: Name
    dataset: Name
    protocol: Name
    seed: Seed
    variant: Literal[""] | Name = ""


# the schema and the store's tables must not drift apart
assert tuple(RunRow.model_fields) == RUN_COLUMNS and tuple(MetricRow.model_fields) == METRIC_COLUMNS


# --- writing and reading -----------------------------------------------------------------------------------------
def write_result(store: Store, run_id: str, run_dir: str | Path) -> Path | None:
    """Write run_dir/result.json from what the store holds for the run (None when it holds nothing)."""
    record = store.run_record(run_id)
    if record is None:
        return None
    metrics = [{**m, "value": encode_value(m["value"])} for m in record["metrics"]]
    doc = {"format": FORMAT, "version": VERSION, "run": record["run"], "metrics": metrics}
    path = Path(run_dir) / RESULT
    check_regular(path, "a result file")  # a directory there would fail the rename after the run's work
    replace_text(path, strict_json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, refusing what is not a regular file of at most MAX_BYTES before reading it."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise ResultFileError(f"{display(path)}: a symbolic link, not a run's result file; not collected")
        if not stat.S_ISREG(st.st_mode):
            raise ResultFileError(f"{display(path)}: not a regular file; not collected")
        if st.st_size > MAX_BYTES:
            raise ResultFileError(f"{display(path)}: {st.st_size} bytes, more than a result file holds "
                                  f"({MAX_BYTES}); not read")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ResultFileError(f"{display(path)}: not a readable result file ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:  # grew since the stat
        raise ResultFileError(f"{display(path)}: more than {MAX_BYTES} bytes; not read")
    return data


def check_identity(doc: ResultDoc, directory: str) -> None:
    """The file belongs to its run: run id == its directory's name == the id recomputed from its config, and the
    run row's identity columns agree with that config. Raises ValueError naming the first disagreement."""
    run = doc.run
    if run.run_id != directory:
        raise ValueError(f"it holds run {run.run_id}, but lies in the directory of {display(directory)}")
    config = json.loads(run.config_json)
    try:
        ident = ConfigIdentity.model_validate(config)
    except ValidationError as e:
        raise ValueError(f"its config_json is not a run's config ({first_problem(e)})") from None
    label = ident.variant or ident.method
    digest = config_hash(config)
    expected = safe_name(f"{label}-{ident.dataset}-{ident.protocol}-s{ident.seed}-{digest}")
    if run.run_id != expected:
        raise ValueError(f"its config makes run {expected}, not {run.run_id}")
    row = (run.method, run.variant, run.dataset, run.protocol, run.seed, run.config_hash)
    want = (ident.method, label, ident.dataset, ident.protocol, ident.seed, digest)
    if row != want:
        names = ("method", "variant", "dataset", "protocol", "seed", "config_hash")
        bad = next(n for n, a, b in zip(names, row, want) if a != b)
        raise ValueError(f"its run row's {bad} disagrees with its config")


def read_result(path: str | Path) -> dict[str, Any]:
    """The record ({"run": ..., "metrics": [...]}) of a result file, validated against the schema and against its
    run (see check_identity); ResultFileError, one line naming the file and the reason, otherwise."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        doc = ResultDoc.model_validate_json(data)
    except ValidationError as e:
        raise ResultFileError(f"{display(path)}: not a valid result file ({first_problem(e)})") from None
    try:
        check_identity(doc, path.parent.name)
    except ValueError as e:
        raise ResultFileError(f"{display(path)}: not this run's result file: {e}") from None
    record = doc.model_dump(include={"run", "metrics"})
    for m in record["metrics"]:
        m["value"] = decode_value(m["value"])
    return record
