"""File names from stored or user-given names (table slugs, run ids, variant names, report files).

Such a name may come from a results store someone else wrote ('smoke/../../x'); it must never pick where a file
goes. `safe_name` turns any text into one harmless file-name component; `path_under` builds a path from such
components and refuses one that would leave its directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

#: what a file-name component may hold: the characters of run ids, which include inline variant names
#: such as 'faae[loss.rec_weight=30]'
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_+\-\[\]=,][A-Za-z0-9_.+\-\[\]=,]*$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.+\-\[\]=,]+")
#: file systems allow 255 bytes per name (safe names are ASCII); room is kept for temporary-file affixes
MAX_NAME = 200


class UnsafePathError(ValueError):
    """A path built from names would leave its directory, or a path cannot be used as it is (a user error:
    one line, exit code 2)."""


class OddFileError(UnsafePathError):
    """A directory, symbolic link or other non-regular file where the suite keeps a file of its own."""


def display(path: str | bytes | os.PathLike) -> str:
    """A path as text that prints and stores anywhere: bytes that are not UTF-8 (a name in another encoding,
    decoded by os.fsdecode with surrogateescape) are shown as \\xNN escapes."""
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "backslashreplace")
    else:
        try:
            text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # lone surrogates that no file name decodes to
            text = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    # control characters (a line break in a name) escaped too: a message naming a path stays one line
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_utf8(text: str | os.PathLike) -> bool:
    """Whether a path or text can be stored and printed as UTF-8 (no undecodable bytes, no lone surrogates)."""
    try:
        os.fspath(text).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_utf8(path: str | os.PathLike, what: str) -> None:
    """Refuse a path that would be stored or printed but is not valid UTF-8, naming it (one line)."""
    if not is_utf8(path):
        raise UnsafePathError(f"{what} {display(path)} is not valid UTF-8; the results store and reports keep "
                              "paths as text: rename it or pass a path whose name is UTF-8")


def odd_kind(path: str | Path) -> str | None:
    """What is at `path` when it is neither nothing nor a regular file: "a directory", "a symbolic link", ..."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return None
    return "a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode) else "a special file"


def check_regular(path: str | Path, what: str) -> None:
    """Nothing, or a regular file, at `path`; a directory, symbolic link or device there is refused in one line
    naming it (OddFileError), before anything reads, replaces or locks it."""
    kind = odd_kind(path)
    if kind is not None:
        raise OddFileError(f"{display(path)} is {kind}, not {what}; move it away and rerun")


def safe_name(text: str) -> str:
    """`text` itself when it is a harmless file name (no separator, not hidden, not '.' or '..', not too long);
    otherwise the text with every other run of characters replaced by '_', shortened, plus 8 hex digits of its
    sha256, so that two different names never share a file."""
    # fullmatch: re's "$" also matches before a trailing newline
    if SAFE_NAME_RE.fullmatch(text) and len(text) <= MAX_NAME:
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
