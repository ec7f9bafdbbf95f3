"""The sampler of `bench tune`'s studies."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution as Distribution
from optuna.trial import FrozenTrial, TrialState


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler with its random stream seeded per trial from (seed, trial number). Trial numbers are
    unique across a study's workers, so concurrent workers never draw the same random settings, a rerun never
    replays a killed session's, and one uninterrupted worker's study repeats exactly. Every method's study draws
    the same random start-up settings for the keys the methods share: common random numbers, one more way in
    which the budget is the same."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.inner = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        mixed = int(hashlib.sha256(f"{self.seed}|{trial.number}".encode()).hexdigest()[:8], 16)
        self.inner = optuna.samplers.TPESampler(seed=mixed)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Distribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, Distribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Distribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)
