"""Collecting results: every run directory's result file (bench.core.result_file) upserted into one store.

Workers that trained runs elsewhere (other machines, other stores, a copied run directory) leave
runs/<id>/result.json; collecting them makes the store hold those runs exactly as their workers stored them,
with their own timestamps, so collecting again changes nothing. A run's run_dir becomes the directory its
result file was found in (where its checkpoint and samples are now), which is unchanged when collecting in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .result_file import RESULT, ResultFileError, read_result
from .store import Store


@dataclass
class Collected:
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: result files that could not be read, with the reason (each names its file)
    damaged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.new)} new, {len(self.updated)} updated, {len(self.unchanged)} unchanged run(s); "
                f"{len(self.damaged)} damaged result file(s)")


def result_files(out: Path) -> list[Path]:
    """The result files of the run directories under out/runs, in run-id order."""
    return sorted((out / "runs").glob(f"*/{RESULT}"))


def collect(out: Path, store: Store) -> Collected:
    """Upsert the result file of every run under out/runs into the store; damaged files are listed, not read."""
    done = Collected()
    for path in result_files(out):
        try:
            record = read_result(path)
        except ResultFileError as e:
            done.damaged.append(str(e))
            continue
        record["run"]["run_dir"] = str(path.parent.resolve())
        status = store.import_record(record)
        getattr(done, status).append(record["run"]["run_id"])
    return done
