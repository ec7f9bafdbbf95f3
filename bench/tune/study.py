"""One Optuna study per method, each with the same budget: `trials` trials of `steps` training steps, over the
method's declared space, scored on a validation split carved from the training split.

The study lives in Optuna's RDB storage: the suite's SQLite store (<out>/results.db) or a PostgreSQL URL, so that
any number of workers (`--workers N` local processes, or the same command on several machines) share it, and a
rerun continues it. A worker that is killed leaves its trial running; its heartbeat goes stale after 2 x
`heartbeat` seconds, the trial is failed and queued again with the same settings (Optuna's
RetryHeartbeatStaleTrialCallback), and the rerun resumes that trial's run from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from bench.core.config import RunConfig
from bench.core.console import fit
from bench.core.data import ImageData, load_dataset
from bench.core.device import resolve_device
from bench.core.errors import UsageError
from bench.core.layout import OutDir
from bench.core.provenance import code_version
from bench.core.records import read_runs
from bench.core.store import Store, is_server
from bench.runs.execute import run_one
from bench.runs.resolve import Variant, resolve_variant
from methods import METHODS
from metrics import METRICS

from .objective import objective_directions, objective_metrics, score
from .sampler import TrialSeededTPE
from .space import Param, active, as_sections, flatten, load_space, space_digest
from .validation import carve_validation

#: trial states that spend the budget: finished with a score, or stopped by divergence (pruned)
SPENT = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TuneSpec:
    """What `bench tune` searches, on what budget, scored how; everything a worker process needs."""

    methods: tuple[str, ...]
    dataset: str
    protocol: str
    #: the budget, the same for every method: trials per study, and training steps per trial (0: the protocol's)
    trials: int
    steps: int = 0
    #: result keys scored on the validation split: one, or several for a Pareto front
    objective: tuple[str, ...] = ("recon_mse",)
    seeds: tuple[int, ...] = (0,)
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    space: str | None = None
    validation: float = 0.1
    out: str = "bench-out"
    #: Optuna's storage: None for the suite's SQLite store, else an SQLite file or a postgresql:// URL
    storage: str | None = None
    data_root: str | None = None
    device: str = "auto"
    sampler_seed: int = 0
    heartbeat: int = 30
    plugins: tuple[str, ...] = ()


def storage_url(spec: TuneSpec) -> str:
    """The SQLAlchemy URL of the study's storage (PostgreSQL through psycopg 3, as the results store)."""
    target = spec.storage or str(OutDir(Path(spec.out)).store)
    if is_server(target):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    return target if target.startswith("sqlite:") else f"sqlite:///{Path(target).resolve()}"


def open_storage(spec: TuneSpec, attempts: int = 10) -> optuna.storages.RDBStorage:
    """Optuna's storage, its tables created on first use. Workers started together race to create them (SQLAlchemy
    checks, then creates): the loser retries."""
    if not spec.storage:  # the suite's store file: its own tables first, so that it stays a results store
        Store(OutDir(Path(spec.out)).store)
    url = storage_url(spec)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=spec.heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
        except (sa.exc.OperationalError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class MethodStudy:
    """One method's study and what its trials run with."""

    method: str
    params: list[Param]
    base: RunConfig
    name: str
    provenance: dict[str, Any]


class OverBudget(Exception):
    """A trial started when the budget was already taken by other workers' trials: it runs nothing."""


def shared_overrides(spec: TuneSpec, values: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """What a trial runs with over the protocol and the method's settings: --set, the step budget every trial
    shares (epochs lifted so that the steps, not an epoch count, end each trial), then the trial's searched values."""
    out: dict[str, dict[str, str]] = {s: dict(v) for s, v in spec.overrides.items()}
    layers = [{"train": {"max_steps": str(spec.steps), "epochs": str(spec.steps)}} if spec.steps else {},
              as_sections({k: str(v) for k, v in (values or {}).items()})]
    for layer in layers:
        for section, items in layer.items():
            out.setdefault(section, {}).update(items)
    return out


def trial_config(spec: TuneSpec, method: str, values: dict[str, Any] | None = None, seed: int = 0) -> RunConfig:
    return resolve_variant(Variant("", method), spec.dataset, spec.protocol, seed, shared_overrides(spec, values),
                           resolve_device(spec.device))


def prepare(spec: TuneSpec, data: ImageData, method: str) -> MethodStudy:
    """The method's searched entries (those that act under its config), checked against the config and the
    objective, and the study's name and provenance."""
    if METHODS.get(method).base_method is not None:
        raise UsageError(f"{method} reuses a trained base model and does not train: tune its base instead")
    space = load_space(spec.space)
    if method not in space:
        raise UsageError(f"the search space has no [{method}] table; it has: {', '.join(space)}")
    base = trial_config(spec, method)
    params = active(space[method], base)
    if not params:
        raise UsageError(f"no entry of [{method}] applies under {spec.protocol} (see their `when`)")
    trial_config(spec, method, {p.key: p.first() for p in params})  # every key valid for the method, now
    provides = frozenset(METHODS.get(method).provides)
    for name in objective_metrics(spec.objective):
        if not METRICS.get(name)().available(provides):
            raise UsageError(f"--objective {name}'s keys are n/a for {method}: it lacks "
                             f"{', '.join(sorted(METRICS.get(name).requires - provides))}")
    objective = objective_directions(spec.objective)
    identity = json.dumps([method, spec.dataset, spec.protocol, spec.objective, space_digest(params),
                           base.train.max_steps, base.train.epochs, spec.seeds, spec.validation, spec.overrides],
                          sort_keys=True, default=str)
    name = (f"{method}-{spec.dataset}-{spec.protocol}-{'+'.join(spec.objective)}-"
            f"{hashlib.sha256(identity.encode()).hexdigest()[:8]}")
    provenance = {
        "method": method, "dataset": spec.dataset, "protocol": spec.protocol,
        "budget": {"trials": spec.trials, "max_steps": base.train.max_steps, "epochs": base.train.epochs,
                   "batch_size": base.train.batch_size},
        "objective": [{"key": k, "direction": d, "study": s} for k, d, s in objective],
        "validation": {"fraction": spec.validation, "n_images": len(data.test), "sha256": data.test_sha256,
                       "train_n_images": len(data.train), "train_sha256": data.train_sha256, "split": data.split},
        "seeds": list(spec.seeds), "sampler": f"TPE (optuna {optuna.__version__}), seeded per trial from "
                                              f"{spec.sampler_seed}",
        "space": {p.key: p.describe() for p in params}, "set": spec.overrides, "code_version": code_version(),
    }
    return MethodStudy(method, params, base, name, provenance)


def open_study(spec: TuneSpec, storage: optuna.storages.RDBStorage, ms: MethodStudy) -> optuna.Study:
    study = optuna.create_study(study_name=ms.name, storage=storage, load_if_exists=True,
                                directions=[s for _, _, s in objective_directions(spec.objective)],
                                sampler=TrialSeededTPE(spec.sampler_seed))
    recorded = study.user_attrs.get("provenance", {}).get("validation", {}).get("sha256")
    if recorded and recorded != ms.provenance["validation"]["sha256"]:
        raise UsageError(f"study {ms.name} was scored on validation split {recorded[:16]}, this data gives "
                         f"{ms.provenance['validation']['sha256'][:16]}: point --data-root at the data it used")
    study.set_user_attr("provenance", ms.provenance)
    enqueue_baseline(study, ms)
    return study


def baseline_values(ms: MethodStudy) -> dict[str, Any]:
    """The protocol's own settings of the searched keys (those the search could draw): the study's baseline."""
    flat = flatten(ms.base)
    return {p.key: flat[p.key] for p in ms.params if p.key in flat and p.holds(flat[p.key])}


def enqueue_baseline(study: optuna.Study, ms: MethodStudy) -> None:
    """The protocol's settings are tried first, once per study (a trial of the budget like any other): the study
    then shows what the search gained over them, method by method, on the same validation images."""
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    values = baseline_values(ms)
    if len(values) == len(ms.params):  # a key outside its range: the protocol's settings are not in the space
        study.enqueue_trial(values, user_attrs={"baseline": True}, skip_if_exists=True)


def counts(study: optuna.Study) -> dict[TrialState, int]:
    out = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def run_trial(spec: TuneSpec, ms: MethodStudy, data: ImageData, store: Store, out: Path,
              trial: optuna.Trial) -> list[float]:
    """Train and score one trial's settings, once per seed; the study's values: the mean over the seeds."""
    ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(*SPENT, TrialState.RUNNING, TrialState.WAITING))
             if t.number < trial.number]
    if len(ahead) >= spec.trials:
        trial.set_user_attr("outcome", "over budget: other workers hold the last trials")
        raise OverBudget
    values = {p.key: p.suggest(trial) for p in ms.params}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    t0, runs, measured = time.perf_counter(), [], {k: [] for k in spec.objective}
    device, metrics = resolve_device(spec.device), objective_metrics(spec.objective)
    for seed in spec.seeds:
        cfg = trial_config(spec, ms.method, values, seed)
        result = run_one(cfg, out, store, data, device, metrics, progress=False)
        while result.status == "skipped":  # another worker trains these very settings: wait for its result
            time.sleep(max(1, spec.heartbeat // 2))
            result = run_one(cfg, out, store, data, device, metrics, progress=False)
        runs.append(result.run_id)
        trial.set_user_attr("runs", runs)
        if result.status == "diverged":
            trial.set_user_attr("outcome", f"diverged: {result.message}")
            raise optuna.TrialPruned(result.message)
        if result.status != "done":
            raise RuntimeError(f"trial run {result.run_id} {result.status}: {result.message}")
        record = read_runs(store, run_ids=[result.run_id])[0]
        for key in spec.objective:
            value = record.values[key].value if key in record.values else None
            if value is None:
                raise UsageError(f"{key} is n/a for {ms.method}: {record.values.get(key)}")
            measured[key].append(value)
    means = {k: sum(v) / len(v) for k, v in measured.items()}
    trial.set_user_attr("values", means)
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
    trial.set_user_attr("outcome", "scored")
    return [score(k, means[k]) for k in spec.objective]


Log = Callable[[str], None]


def work(spec: TuneSpec, log: Log = print) -> list[optuna.Study]:
    """One worker: every method's study in turn, until each has its budget of spent trials. Returns the studies."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec)
    cache: dict[Any, ImageData] = {}
    studies = []
    for method in spec.methods:
        first = trial_config(spec, method)
        key = (first.dataset, first.data)
        if key not in cache:
            cache[key] = carve_validation(load_dataset(spec.dataset, spec.data_root, first.data), spec.validation)
        ms = prepare(spec, cache[key], method)
        studies.append(open_study(spec, storage, ms))
        run_study(spec, studies[-1], ms, cache[key], log)
    return studies


def run_study(spec: TuneSpec, study: optuna.Study, ms: MethodStudy, data: ImageData, log: Log) -> None:
    """Trials of one study, one at a time, until the study has its budget of spent trials (this worker's and
    others'); trial runs go to <out>/tune/<study>/ with a store of their own."""
    out = OutDir(Path(spec.out)).tune(ms.name)
    store = Store(OutDir(out).store)

    def objective(trial: optuna.Trial) -> list[float]:
        return run_trial(spec, ms, data, store, out, trial)

    def report(_: optuna.Study, trial: FrozenTrial) -> None:
        if not isinstance(trial.user_attrs.get("outcome"), str) or not trial.user_attrs["outcome"].startswith("over"):
            log(fit(describe_trial(ms.method, trial)))

    while True:
        n = counts(study)
        if n[TrialState.COMPLETE] + n[TrialState.PRUNED] >= spec.trials:
            return
        if sum(n[s] for s in (*SPENT, TrialState.RUNNING)) >= spec.trials and not n[TrialState.WAITING]:
            # other workers hold the last trials; a dead one's goes stale, is failed and queued again
            time.sleep(min(5, spec.heartbeat))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            continue
        study.optimize(objective, n_trials=1, catch=(OverBudget,), gc_after_trial=False, callbacks=[report])


def describe_trial(method: str, t: FrozenTrial) -> str:
    settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    values = ", ".join(f"{k}={v:.4g}" for k, v in t.user_attrs.get("values", {}).items())
    kind = ", the protocol's settings" if t.user_attrs.get("baseline") else ""
    return (f"{method} trial {t.number} ({t.state.name.lower()}{kind}): {settings} -> "
            f"{values or t.user_attrs.get('outcome', '')}")
