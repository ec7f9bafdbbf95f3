"""`bench tune`: the same hyperparameter-search budget for every method, with Optuna, scored on a validation split
carved from the training split.

- space: the declared search space per method (a TOML file; DEFAULT_SPACE is shipped)
- validation: the validation split carved from the training split
- study: one Optuna study per method in RDB storage, its trials and their runs, workers sharing it
- objective: the result keys a study optimises, each in its direction
- sampler: Optuna's TPE, seeded per trial
- variants: each study's best settings as a variants file for `bench run --variants`, with provenance
- run: the entry point (`tune`), with local worker processes

Kept free of imports, like bench.runs.
"""
