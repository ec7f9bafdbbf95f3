"""Collecting results: every run directory's result file (bench.core.result_file) upserted into one store.

Workers that trained runs elsewhere (other machines, other stores, a copied run directory) leave
runs/<id>/result.json; collecting them makes the store hold those runs exactly as their workers stored them,
with their own timestamps, so collecting again changes nothing. A run's run_dir becomes the directory its
result file was found in (where its checkpoint and samples are now), which is unchanged when collecting in place.

Per file and atomic: each file is validated on its own (schema, and that it belongs to the run of its directory)
and upserted in one transaction; a file refused is named with the reason and the others are still collected.
Newer wins: a file behind the stored row of its run (steps, status, last update) changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .layout import OutDir
from .paths import display, is_utf8
from .result_file import RESULT, ResultFileError, read_result
from .store import Store


@dataclass
class Collected:
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: runs whose stored row is ahead of their file (the file was copied before the run went on): kept as stored
    older: list[str] = field(default_factory=list)
    #: result files not collected, with the reason (each line names its file)
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        older = f", {len(self.older)} older than stored (kept)" if self.older else ""
        return (f"{len(self.new)} new, {len(self.updated)} updated, {len(self.unchanged)} unchanged run(s){older}; "
                f"{len(self.refused)} refused result file(s)")


def result_files(out: Path) -> list[Path]:
    """The result files of the run directories under out/runs, in run-id order."""
    return sorted(OutDir(out).runs.glob(f"*/{RESULT}"))


def collect_one(path: Path, store: Store) -> str:
    """Validate one result file and upsert it; its status ("new", "updated", "unchanged", "older"), or
    ResultFileError naming the file and why it was refused."""
    run_dir = path.parent
    if run_dir.is_symlink():  # its files live elsewhere: not a run directory of this --out
        raise ResultFileError(f"{display(path)}: {display(run_dir.name)} is a symbolic link, not a run directory; "
                              "not collected")
    where = os.path.realpath(run_dir)
    if not is_utf8(where):
        raise ResultFileError(f"{display(path)}: the run directory {display(where)} is not valid UTF-8, and the "
                              "store keeps it as text; rename it to collect the run")
    record = read_result(path)
    record["run"]["run_dir"] = where
    return store.import_record(record)


def collect(out: Path, store: Store) -> Collected:
    """Upsert the result file of every run under out/runs into the store, file by file; refused files are listed
    with the reason and skipped."""
    done = Collected()
    for path in result_files(out):
        try:
            status = collect_one(path, store)
        except ResultFileError as e:
            done.refused.append(str(e))
            continue
        getattr(done, status).append(path.parent.name)
    return done
