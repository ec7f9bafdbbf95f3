"""Checkpoint files that cannot run code: tensors and plain data only, read with torch's weights-only
unpickler. Every torch.load of the project goes through load_tensors.

A checkpoint is a dict with FORMAT_KEY = FORMAT_VERSION. A file that is not one (a truncated or garbage
file, a pickle that refers to anything but tensors and plain containers, a checkpoint of an older format)
is refused with a one-line CheckpointError naming the file and what to do; nothing in it is executed.
Format 1 (before this module) pickled numpy's and python's RNG state objects and needed the full
unpickler: such files are recognised and named as older, never loaded.
"""

from __future__ import annotations

import errno
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import torch

from .paths import odd_kind
from .tempfiles import atomic_write

FORMAT_KEY = "aegan_bench_checkpoint"
FORMAT_VERSION = 2


class CheckpointError(Exception):
    """A checkpoint that cannot be used: damaged, foreign, crafted or of another format version. A user error
    (bench.cli.user_errors): one line, exit code 2, no traceback."""

    def __init__(self, path: Path, problem: str):
        self.path = path
        super().__init__(f"checkpoint {path} {problem}; remove that file or rerun `bench run` with --overwrite "
                         "to train the run again")


class NoSpaceError(OSError):
    """The disk filled up while writing a file; what was there before is intact."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; free some space and rerun "
                                       "the same command: it resumes from the last checkpoint")

    def __str__(self) -> str:
        return self.strerror


def load_tensors(path: str | Path) -> Any:
    """The one torch.load of the project: weights only (tensors, plain containers and numbers), on the CPU."""
    with warnings.catch_warnings():
        # a foreign pickle's protocol: it is refused with our own message anyway
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of ours, or CheckpointError (one line naming the file and what to do); a directory or
    symbolic link at `path` is refused unread."""
    path = Path(path)
    _check_file(path)
    try:
        obj = load_tensors(path)
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, _unsafe_problem(path) or _refused(e)) from None
    except FileNotFoundError:
        raise CheckpointError(path, "does not exist") from None
    except Exception as e:  # truncated zip, garbage, torch's own format errors
        raise CheckpointError(path, f"is damaged or not a checkpoint ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"is not an aegan-bench checkpoint (it holds a {type(obj).__name__})")
    version = obj.get(FORMAT_KEY)
    if version is None:
        if {"model", "step"} <= set(obj):
            raise CheckpointError(path, "was written by an older aegan-bench (no format version)")
        raise CheckpointError(path, "is not an aegan-bench checkpoint (no format version)")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"has checkpoint format {version!r}; this aegan-bench reads format "
                                    f"{FORMAT_VERSION}")
    return obj


def _check_file(path: Path) -> None:
    """A checkpoint is a regular file: a directory or symbolic link in its place is named, never read or replaced."""
    kind = odd_kind(path)
    if kind is not None:
        raise CheckpointError(path, f"is {kind}, not a checkpoint file")


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically (a temporary file renamed over `path`). On a full disk: NoSpaceError,
    the previous checkpoint intact, no temporary left. A directory or symbolic link at `path` is refused
    (CheckpointError) rather than replaced."""
    path = Path(path)
    _check_file(path)

    def write(tmp: Path) -> None:
        # a file object, not a path: torch's own writer reports a full disk as "unexpected pos", while a
        # python file keeps the OSError on the exception chain
        with open(tmp, "wb") as f:
            torch.save({**obj, FORMAT_KEY: FORMAT_VERSION}, f)

    try:
        atomic_write(path, write)
    except Exception as e:
        if _no_space(e):
            raise NoSpaceError(path) from None
        raise


def as_no_space(e: BaseException, path: str | Path) -> NoSpaceError | None:
    """A NoSpaceError naming the file (the error's own, else `path`) when `e` comes from a full disk."""
    if isinstance(e, NoSpaceError):
        return e
    if not _no_space(e):
        return None
    name = getattr(e, "filename", None)
    return NoSpaceError(Path(name) if name else Path(path))


def _no_space(e: BaseException | None) -> bool:
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _unsafe_problem(path: Path) -> str | None:
    """Why the weights-only unpickler refused the file, from the globals its pickle names (read without
    running it)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip archive: a plain pickle, perhaps
        names = _plain_pickle_globals(path)
    if names and all(n.startswith("numpy.") for n in names):
        return "was written by an older aegan-bench (checkpoint format 1, which only the unsafe unpickler reads)"
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"refers to {shown}, which no aegan-bench checkpoint holds (a foreign or crafted file); it was not loaded"
    return None


def _plain_pickle_globals(path: Path) -> list[str]:
    """The importable names a plain pickle file refers to, found by parsing its opcodes (never executing
    them), torch's own and containers left out; [] when it does not parse."""
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif "UNICODE" in op.name:
                    strings.append(str(arg))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
    except Exception:
        return []
    return [n for n in dict.fromkeys(names) if not n.startswith(("torch.", "collections."))]


def _refused(e: BaseException) -> str:
    # torch's message suggests loading with weights_only=False: never pass that advice on
    detail = next((ln.strip() for ln in str(e).splitlines() if "nsupported" in ln), "")
    return "is damaged or not a checkpoint (the weights-only unpickler refused it" + (f": {detail})" if detail else ")")


def _first_line(e: BaseException) -> str:
    """The error's type and first sentence, short enough for a one-line message."""
    lines = str(e).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."
