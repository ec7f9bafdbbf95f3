"""Leases: one process at a time owns a run directory (trains and evaluates it).

A lease is a small JSON file (host, pid, start time, heartbeat, a random token) created with O_EXCL, so
that of two processes claiming a run at once exactly one succeeds. The holder refreshes the heartbeat from
a background thread while it works. Another process skips a run whose holder is alive, and takes the
lease over when the holder is gone: a dead pid on this host, or a heartbeat older than the timeout
($AEGAN_BENCH_LEASE_TIMEOUT_S, default 300 s), which covers holders on other hosts, stopped ones and
reused pids. Every claim is appended to a history file next to the lease, so that what trained a run can
be audited afterwards.

Many workers (one per core, per GPU or per machine on a shared file system) can then share one list of
runs: each claims what is free and leaves what another holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .paths import check_regular
from .tempfiles import HOST, process_gone, temp_path

TIMEOUT_ENV = "AEGAN_BENCH_LEASE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0

#: tokens of the leases this process holds (a lease file naming our pid but none of these is a leftover)
_HELD: set[str] = set()


class LeaseLost(RuntimeError):
    """Our lease was taken over (our heartbeat stopped for longer than the timeout): stop working on the run."""


def lease_timeout() -> float:
    """Seconds without a heartbeat after which a lease held on another host counts as abandoned."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class LeaseInfo:
    host: str
    pid: int
    started: float
    heartbeat: float
    token: str

    def describe(self, now: float | None = None) -> str:
        age = (now or time.time()) - self.heartbeat
        return f"pid {self.pid} on {self.host} (since {time.strftime('%H:%M:%S', time.localtime(self.started))}, " \
               f"heartbeat {age:.0f} s ago)"


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at `path`, or None when there is none or it cannot be parsed (a holder killed between
    creating and writing it)."""
    try:
        d = json.loads(path.read_text())
        return LeaseInfo(str(d["host"]), int(d["pid"]), float(d["started"]), float(d["heartbeat"]), str(d["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_reason(path: Path, info: LeaseInfo | None, timeout: float, now: float | None = None) -> str | None:
    """Why the lease at `path` is abandoned, or None while its holder may still be working."""
    now = now or time.time()
    if info is None:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            return "gone"
        return f"unreadable lease file, untouched for {age:.0f} s" if age > timeout else None
    if info.host == HOST and info.pid == os.getpid() and info.token not in _HELD:
        return f"left by an earlier lease of this process (pid {info.pid})"
    if process_gone(info.host, info.pid):
        return f"pid {info.pid} on {info.host} has ended"
    if now - info.heartbeat > timeout:
        return f"no heartbeat from pid {info.pid} on {info.host} for {now - info.heartbeat:.0f} s"
    return None


class Lease:
    """A held lease. Use as a context manager: the heartbeat thread runs inside, the lease is released at
    the end (also on errors; a killed process leaves it behind for the next claimant to take over).

    The holder keeps its lease file open and writes heartbeats through that descriptor: once the file has
    been taken over (moved away, another created in its place), a late heartbeat lands in the old file and
    never overwrites the new holder's."""

    def __init__(self, path: Path, info: LeaseInfo, timeout: float, fd: int, took_over: str | None = None):
        self.path = path
        self.info = info
        self.timeout = timeout
        #: why the previous lease was abandoned, when this one replaced it
        self.took_over = took_over
        self._fd = fd
        self._lock = threading.Lock()  # the heartbeat thread and release() share the descriptor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    # --- heartbeat --------------------------------------------------------------------------------------
    def _still_ours(self) -> bool:
        """Whether the file at our path is still the one we created."""
        try:
            mine, there = os.fstat(self._fd), os.stat(self.path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                return True
        except (FileNotFoundError, OSError):
            pass
        current = read_lease(self.path)
        self._lost = f"lease {self.path} was taken over" + (f" by {current.describe()}" if current else "")
        return False

    def beat(self) -> None:
        """Refresh the heartbeat in our lease file."""
        with self._lock:
            if self._fd < 0 or self._lost or not self._still_ours():
                return
            self.info = LeaseInfo(**{**asdict(self.info), "heartbeat": time.time()})
            _write_fd(self._fd, json.dumps(asdict(self.info)))

    def note(self, **record: Any) -> None:
        """Add an event of this lease (e.g. "train from step N") to the claims history."""
        _append(history_path(self.path), {"event": "note", "token": self.info.token, "host": self.info.host,
                                          "pid": self.info.pid, "time": time.time(), **record})

    def check(self) -> None:
        """Raise LeaseLost when another process has taken the run over (called before each write)."""
        if self._lost or self._fd < 0 or not self._still_ours():
            raise LeaseLost(self._lost or f"lease {self.path} was released")

    def _beat_loop(self) -> None:
        interval = max(0.2, min(30.0, self.timeout / 5))
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError):  # a full disk: the next beat may succeed
                self.beat()

    # --- lifetime ---------------------------------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._fd < 0:
                return
            _HELD.discard(self.info.token)
            if self._still_ours():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._beat_loop, name=f"lease {self.path}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@dataclass(frozen=True)
class Held:
    """A claim refused: another live process holds the lease."""

    path: Path
    holder: LeaseInfo | None

    def describe(self) -> str:
        return self.holder.describe() if self.holder else "a process whose lease is being written"


def history_path(path: Path) -> Path:
    """Where the claims of a lease are listed ("lease.json" -> "lease.history.jsonl")."""
    return path.with_name(f"{path.stem}.history.jsonl")


def acquire(path: str | Path, timeout: float | None = None) -> Lease | Held:
    """Claim the lease at `path`: a Lease when we hold it now, Held when a live process does. A directory or
    symbolic link at `path` is no lease anyone holds, and is not removed: OddFileError, one line naming it."""
    path = Path(path)
    check_regular(path, "a lease file")
    timeout = lease_timeout() if timeout is None else timeout
    took_over = None
    for _ in range(10):  # each pass either claims, finds a live holder, or removes one abandoned lease
        now = time.time()
        info = LeaseInfo(HOST, os.getpid(), now, now, uuid.uuid4().hex)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_lease(path)
            reason = stale_reason(path, current, timeout)
            if reason is None:
                return Held(path, current)
            # recorded even when a rival claimant moved the abandoned lease away first: if we then win the
            # path, ours is still the claim that follows it
            took_over = reason
            _remove_if_unchanged(path, current)
            continue
        try:
            _write_fd(fd, json.dumps(asdict(info)))
        except OSError:  # e.g. a full disk: leave no empty lease behind
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        _HELD.add(info.token)
        _append(history_path(path), {"event": "claim", **asdict(info), "took_over": took_over})
        return Lease(path, info, timeout, fd, took_over)
    return Held(path, read_lease(path))


def _remove_if_unchanged(path: Path, seen: LeaseInfo | None) -> bool:
    """Remove the abandoned lease we judged, not one that another claimant put there meanwhile: move it
    aside atomically, then look at what was moved. Returns whether the judged lease was removed."""
    aside = temp_path(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = read_lease(aside)
    if (moved.token if moved else None) != (seen.token if seen else None):
        # a fresh lease of another claimant: put it back unless a third one already claimed the path
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
        return False
    aside.unlink()
    return True


def _write_fd(fd: int, text: str) -> None:
    # readers may see a half-written file: they take it for a lease still being written (held)
    data = text.encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _append(path: Path, record: dict[str, Any]) -> None:
    """One line per claim; O_APPEND keeps concurrent lines whole."""
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
