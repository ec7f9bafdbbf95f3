"""The output layout, written once: where an output directory keeps its store, runs, report and sweep state, and
where a run directory keeps each of its files. Everything else asks these objects for paths.

    <out>/results.db              the results store (bench.core.store)
    <out>/runs/<run id>/          one run: config.json, data.json, last.pt, log.jsonl, lease.json,
                                  lease.history.jsonl, result.json, diverged.txt, samples/, eval/
    <out>/report/                 bench report
    <out>/sweep/                  bench sweep's state and job logs
    <out>/tune/<study>/           bench tune: the trial runs of one study (an output directory of their own)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STORE = "results.db"
RUNS = "runs"
CHECKPOINT = "last.pt"
LEASE = "lease.json"
RESULT = "result.json"
CONFIG = "config.json"
LOG = "log.jsonl"
DIVERGED = "diverged.txt"


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory, <out>/runs/<run id>/."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def out(self) -> OutDir:
        """The output directory the run belongs to."""
        return OutDir(self.path.parent.parent)

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def lease(self) -> Path:
        return self.path / LEASE

    @property
    def result(self) -> Path:
        return self.path / RESULT

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def diverged(self) -> Path:
        return self.path / DIVERGED

    @property
    def samples(self) -> Path:
        """Sample grids written during training."""
        return self.path / "samples"

    @property
    def eval(self) -> Path:
        """The images an evaluation scored (eval/samples, eval/recon)."""
        return self.path / "eval"


@dataclass(frozen=True)
class OutDir:
    """An output directory of `bench run` / `bench sweep`."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def store(self) -> Path:
        return self.path / STORE

    @property
    def runs(self) -> Path:
        return self.path / RUNS

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs / run_id)

    def run_dirs(self, marker: str = CONFIG) -> list[RunDir]:
        """Run directories holding `marker` (their config by default), in run-id order."""
        return [RunDir(p.parent) for p in sorted(self.runs.glob(f"*/{marker}"))]

    @property
    def report(self) -> Path:
        return self.path / "report"

    @property
    def sweep(self) -> Path:
        return self.path / "sweep"

    def tune(self, study: str) -> Path:
        """The output directory of one `bench tune` study's trial runs (an output directory of its own)."""
        return self.path / "tune" / study
