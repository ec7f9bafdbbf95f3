"""What the declared schemas (pydantic models of result files, sweep state files, claims files) share: the suite's
name rule as a field type, and a validation error as one line."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, ValidationError

from .paths import MAX_NAME, SAFE_NAME_RE

#: a name as the suite makes them (run ids, methods, variants, datasets, protocols, metrics, keys): file-name safe
Name = Annotated[str, StringConstraints(pattern=SAFE_NAME_RE.pattern, max_length=MAX_NAME)]


def first_problem(e: ValidationError) -> str:
    """The first problem of a ValidationError as one short line: where (keys quoted unless they are plain names)
    and what, never the input itself, which may be huge or hold line breaks."""
    errors = e.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(p) if isinstance(p, int) or SAFE_NAME_RE.fullmatch(p) else repr(p) for p in first["loc"])
    text = " ".join(first["msg"].split())[:200]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {text}{more}" if where else f"{text}{more}"
