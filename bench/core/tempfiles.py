"""Temporary files named by their writer, and the removal of those whose writer is gone.

Files are written to a temporary name next to their destination and renamed over it, so that a reader
never sees half a file. The temporary name holds the writer's pid, a random part and its host: two
processes writing the same file never share a temporary, and a later process can tell whether the writer
of a leftover (after a kill or a full disk) has ended: then the leftover is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HOST = socket.gethostname()

#: ".NAME.tmpPID-RANDOM@HOST" (this module), ".NAME.tmpPID" and ".NAME.tmp" (names of earlier versions)
_TEMP = re.compile(r"^\..+\.tmp(?P<pid>\d+)?(?:-[0-9a-f]{8}(?:@(?P<host>.+))?)?$")
#: temporaries that do not name their writer are left this long, in case an older version still writes them
UNNAMED_MIN_AGE_S = 600.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie (killed, not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        # /proc/PID/stat: "pid (comm) state ..."; comm may hold spaces and parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def process_gone(host: str, pid: int) -> bool:
    """True when a process of this host has ended; a process elsewhere is never judged by its pid."""
    return host == HOST and not pid_alive(pid)


def temp_path(path: str | Path) -> Path:
    """A temporary name next to `path`, unique to this write."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}@{HOST}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """The one way files are written: `write(tmp)` fills a temporary of a unique name next to `path`, which is then
    renamed over it, so readers see the old file or the new one, never a part; no temporary is left on errors."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def replace_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def is_orphan(path: Path, now: float | None = None) -> bool:
    """A temporary file whose writer has ended (or, for one that does not name its writer, an old one)."""
    m = _TEMP.match(path.name)
    if m is None:
        return False
    if m["pid"] is None:
        try:
            return (now or time.time()) - path.stat().st_mtime > UNNAMED_MIN_AGE_S
        except FileNotFoundError:
            return False
    return process_gone(m["host"] or HOST, int(m["pid"]))


def remove_orphans(*directories: str | Path) -> list[Path]:
    """Remove the orphaned temporary files directly in these directories; returns what was removed."""
    removed = []
    for d in directories:
        try:
            entries = list(Path(d).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for p in entries:
            if p.is_file() and is_orphan(p):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed
