"""Each study's best settings as a variants TOML file that `bench run --variants` reads (bench.runs.resolve), with
the study's provenance in comments: budget, objective, validation split digest, seeds, sampler, storage.

A variant sets the searched keys, and `origin.study` / `origin.keys`, which the report's settings block reads to
say that a row's settings were tuned and by which study (they are not part of the run's identity).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.core.tempfiles import replace_text


def toml_value(value: Any) -> str:
    """A TOML literal of a number, boolean or string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several), among the scored ones."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return [study.best_trial] if len(study.directions) == 1 else sorted(study.best_trials, key=lambda t: t.number)


def origin_text(name: str, provenance: dict[str, Any], spent: int) -> str:
    """One line for the report: the study and what it spent."""
    budget, val = provenance["budget"], provenance["validation"]
    keys = ", ".join(f"{o['key']} ({o['direction']})" for o in provenance["objective"])
    return (f"{name}: {spent} of {budget['trials']} trials x {budget['max_steps'] or budget['epochs']} "
            f"{'steps' if budget['max_steps'] else 'epochs'}, {keys} on validation sha256 {val['sha256'][:12]} "
            f"({val['n_images']} images of the training split), seeds {','.join(map(str, provenance['seeds']))}")


def study_block(study: optuna.Study, storage: str) -> list[str]:
    """The variants of one study, with its provenance as comments."""
    prov = study.user_attrs["provenance"]
    method, budget, val = prov["method"], prov["budget"], prov["validation"]
    trials = study.get_trials(deepcopy=False)
    spent = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    lines = [
        f"# --- {method}: study {study.study_name} in {storage}",
        f"# budget: {budget['trials']} trials ({spent} spent: "
        f"{sum(t.state == TrialState.PRUNED for t in trials)} diverged), each {budget['max_steps']} steps "
        f"(train.max_steps; at most {budget['epochs']} epoch(s)) of batch {budget['batch_size']}",
        "# objective: " + ", ".join(f"{o['key']} ({o['direction']}; the study {o['study']}s "
                                    f"{'|ln value|' if o['direction'] == 'closest to 1' else 'it'})"
                                    for o in prov["objective"]),
        f"# validation: {val['n_images']} images carved from the training split ({val['fraction']}), sha256 "
        f"{val['sha256']}; trials trained on the other {val['train_n_images']}, sha256 {val['train_sha256']}; "
        "the test split was not used",
        f"# seeds {', '.join(map(str, prov['seeds']))}; sampler {prov['sampler']}; code {prov['code_version']}",
        f"# searched: {json.dumps(prov['space'], sort_keys=True)}",
    ]
    if prov["set"]:
        lines.append(f"# --set: {json.dumps(prov['set'], sort_keys=True)}")
    baseline = next((t for t in trials if t.user_attrs.get("baseline") and t.user_attrs.get("values")), None)
    if baseline is not None:
        lines.append(f"# the protocol's own settings (trial {baseline.number}): " + ", ".join(
            f"{k}={v:.6g}" for k, v in baseline.user_attrs["values"].items()))
    best = best_trials(study)
    if not best:
        return [*lines, f"# no scored trial yet: no {method} variant", ""]
    origin = origin_text(study.study_name, prov, spent)
    for t in best:
        name = f"{method}-tuned" if len(best) == 1 else f"{method}-tuned-t{t.number}"
        scored = ", ".join(f"{k}={v:.6g}" for k, v in t.user_attrs.get("values", {}).items())
        lines += [
            f"# trial {t.number}{' (on the Pareto front)' if len(best) > 1 else ''}: {scored}",
            f"[{name}]",
            f"base = {toml_value(method)}",
            f"description = {toml_value(f'{method} tuned by bench tune, trial {t.number} of study {study.study_name}')}",
            f"[{name}.set]",
            *(f"{toml_value(k)} = {toml_value(v)}" for k, v in sorted(t.params.items())),
            f"\"origin.study\" = {toml_value(origin)}",
            f"\"origin.keys\" = {toml_value(','.join(sorted(t.params)))}",
        ]
    return [*lines, ""]


def summary(study: optuna.Study) -> str:
    """One line per study for the command's output."""
    prov = study.user_attrs["provenance"]
    trials = study.get_trials(deepcopy=False)
    spent = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    def values(t: FrozenTrial) -> str:
        return ", ".join(f"{k}={v:.4g}" for k, v in t.user_attrs.get("values", {}).items())

    best = "; ".join(f"trial {t.number}: {values(t)}" for t in best_trials(study)) or "no scored trial"
    base = next((f"; the protocol's settings: {values(t)}" for t in trials
                 if t.user_attrs.get("baseline") and t.user_attrs.get("values")), "")
    return (f"{prov['method']}: {spent} of {prov['budget']['trials']} trials spent (study {study.study_name}); "
            f"best {best}{base}")


def write_variants(path: Path, studies: list[optuna.Study], storage: str, protocol: str, dataset: str) -> Path:
    """The variants file of every study (replaced atomically: concurrent workers may each write it)."""
    head = [f"# Variants written by `bench tune` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): each "
            f"method's best settings on {dataset} under `{protocol}`,",
            "# scored on a validation split of the training split. Use: python -m bench run --variants "
            f"{path.name} --methods <name> ...", ""]
    body = [line for study in studies for line in study_block(study, storage)]
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, "\n".join(head + body))
    return path
