"""File names from stored or user-given names (table slugs, run ids, variant names, report files).

Such a name may come from a results store someone else wrote ('smoke/../../x'); it must never pick where a file
goes. `safe_name` turns any text into one harmless file-name component; `path_under` builds a path from such
components and refuses one that would leave its directory.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

#: what a file-name component may hold: the characters of run ids, which include inline variant names
#: such as 'faae[loss.rec_weight=30]'
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_+\-\[\]=,][A-Za-z0-9_.+\-\[\]=,]*$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.+\-\[\]=,]+")
#: file systems allow 255 bytes per name (safe names are ASCII); room is kept for temporary-file affixes
MAX_NAME = 200


class UnsafePathError(ValueError):
    """A path built from names would leave its directory."""


def safe_name(text: str) -> str:
    """`text` itself when it is a harmless file name (no separator, not hidden, not '.' or '..', not too long);
    otherwise the text with every other run of characters replaced by '_', shortened, plus 8 hex digits of its
    sha256, so that two different names never share a file."""
    if SAFE_NAME_RE.match(text) and len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cleaned = _UNSAFE_RUN.sub("_", text).lstrip(".")[: MAX_NAME - 9]
    return f"{cleaned}-{digest}" if cleaned else digest


def path_under(base: str | Path, *names: str) -> Path:
    """base/name/... with every name made safe; raises UnsafePathError if the result is not inside base."""
    base = Path(base)
    path = base.joinpath(*(safe_name(n) for n in names))
    # safe names cannot climb, so this guards the helper itself (and any later change to SAFE_NAME_RE)
    inside = os.path.normpath(base.absolute())
    if os.path.commonpath([inside, os.path.normpath(path.absolute())]) != inside or path == base:
        raise UnsafePathError(f"{path} is not inside {base}")
    return path
