"""The engine: a run from its resolved config to stored results.

- resolve: a run's config (defaults <- protocol <- method <- --set <- variant) and variants
- state: training state, RNG, seeding; what a run ends as
- step: one training step and the loss meter
- loop: the training loop (logs, sample grids, checkpoints)
- parallel, followers: data-parallel training under torchrun
- execute: claim, train or resume, evaluate, store (the entry point: `execute`)

Kept free of imports so that `bench.runs.resolve` loads without the training stack.
"""
