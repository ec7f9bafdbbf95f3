"""Evaluation of finished runs from their run directories and checkpoints (`bench eval`): never trains. Metrics
already stored are skipped unless `overwrite`, so adding a metric to old runs costs only that metric; a
refinement ("faae+sc") loads its base run's finished checkpoint, as training does."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from methods.trained import load_trained, run_checkpoint
from metrics import METRICS, evaluate, select_metrics

from ..core.checkpoint import CheckpointError, load_checkpoint
from ..core.config import RunConfig
from ..core.console import fit
from ..core.data import check_run_data, load_dataset
from ..core.device import device_name
from ..core.distributed import training_provenance
from ..core.errors import UsageError
from ..core.layout import OutDir
from ..core.provenance import code_version, package_versions
from ..core.result_file import write_result
from ..core.store import Store
from .execute import use_all_cores
from .state import seed_everything


@dataclass
class FoundRun:
    run_id: str
    run_dir: Path
    cfg: RunConfig


def _matches(value: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def find_runs(out: Path, runs_glob: str = "*", methods: list[str] | None = None,
              datasets: list[str] | None = None) -> list[FoundRun]:
    """Run directories under out/runs with a saved config that match the filters, in run-id order."""
    found = []
    for files in OutDir(out).run_dirs():
        run_dir, cfg_path = files.path, files.config
        if not fnmatch.fnmatchcase(run_dir.name, runs_glob):
            continue
        try:
            cfg = RunConfig.from_dict(json.loads(cfg_path.read_text()))
        except (OSError, ValueError, TypeError) as e:  # ConfigError is a ValueError too
            raise UsageError(f"{cfg_path} is not a readable run config ({e}); remove that run directory or "
                             "pass --runs to leave it out") from None
        if not (_matches(cfg.label, methods or []) or _matches(cfg.method, methods or [])):
            continue
        if not _matches(cfg.dataset, datasets or []):
            continue
        found.append(FoundRun(run_dir.name, run_dir, cfg))
    return found


def stale_metrics(store: Store, run_id: str, metrics: list[str]) -> list[str]:
    """Selected metrics (names, as select_metrics gives them) stored for this run without all of their current
    result keys."""
    done, keys = store.metrics_done(run_id), store.metric_keys(run_id)
    return [n for n in metrics if n in done and not set(METRICS.get(n).keys) <= keys]


def evaluate_runs(out: Path, found: list[FoundRun], metrics: list[str] | None, device: torch.device,
                  data_root: str | None = None, overwrite: bool = False) -> tuple[list[str], list[str]]:
    """Evaluate the found runs in order; returns the run ids evaluated and, per run left out, why (a run that
    diverged, lacks a finished checkpoint or holds another model's weights: the others are still evaluated)."""
    use_all_cores()
    store = Store(OutDir(out).store)
    cache: dict[tuple, object] = {}
    evaluated, skipped = [], []
    cache: dict[tuple, object] = {}
    evaluated, skipped = [], []
    for f in found:
        row = store.get_run(f.run_id)
        if row and row["status"] == "diverged":
            skipped.append(f"{f.run_id}: diverged in training, nothing to evaluate")
            continue
        path = run_checkpoint(f.cfg, out)
        try:
            ckpt = load_checkpoint(path) if path.exists() else {}
        except CheckpointError as e:  # this run only: the others are evaluated
            skipped.append(f"{f.run_id}: {e}")
            continue
        if not ckpt.get("finished"):
            skipped.append(f"{f.run_id}: no finished checkpoint at {path}; `bench run` trains or resumes it")
            continue
        cfg = f.cfg
        key = (cfg.dataset, cfg.data)
        if key not in cache:
            cache[key] = load_dataset(cfg.dataset, data_root, cfg.data)
        data = cache[key]
        check_run_data(f.run_dir, data)  # never score a run on other images than it was trained with
        seed_everything(cfg.seed)  # metrics draw from their own generators; this covers any global draw
        try:
            method = load_trained(cfg, ckpt, path, data, device)
        except CheckpointError as e:  # weights of another model: this run only
            skipped.append(f"{f.run_id}: {e}")
            continue
        own = type(method).base_method is None
        if row is None:  # a run directory copied without its results store: register it first
            store.upsert_run(
                f.run_id, method=cfg.method, variant=cfg.label, dataset=cfg.dataset, protocol=cfg.protocol,
                seed=cfg.seed, config_json=cfg.to_dict(), config_hash=cfg.config_hash(),
                code_version=code_version(), packages_json=package_versions(), device=device_name(device),
                dtype=cfg.train.precision, run_dir=str(f.run_dir.resolve()), status="done",
                steps=ckpt["step"] if own else 0, train_seconds=ckpt["train_seconds"] if own else 0.0)
        extras = {}
        if own and ckpt.get("train_seconds", 0) > 0:
            # measured by the runner during training and saved in the checkpoint
            extras["train_images_per_s"] = ckpt["images_seen"] / ckpt["train_seconds"]
            if row is not None:
                extras["train_device"] = row["device"]
        trained = training_provenance(ckpt.get("parallel", []))  # processes that trained the weights, if several
        print(fit(f"{f.run_id}: evaluating from {path}"))
        # no --metrics: the run's protocol default set, as `evaluate` resolves it
        selected = select_metrics(metrics, cfg.eval.pretrained)
        stale = [] if overwrite else stale_metrics(store, f.run_id, selected)
        if stale:  # stored before the metric gained keys: recompute those metrics whole
            print(fit(f"  recomputing {', '.join(stale)}: stored without some of their current keys"))
            evaluate(method, cfg, data, device, store, f.run_id, f.run_dir, metrics=stale, overwrite=True,
                     extras=extras, trained=trained)
        evaluate(method, cfg, data, device, store, f.run_id, f.run_dir, metrics=metrics, overwrite=overwrite,
                 extras=extras, trained=trained)
        if row is not None and row["status"] != "done":  # e.g. killed during its first evaluation
            store.set_status(f.run_id, "done")
        write_result(store, f.run_id, f.run_dir)  # also for runs stored before result files existed
        evaluated.append(f.run_id)

    return evaluated, skipped
