"""The data a `bench tune` trial sees: a validation split carved from the TRAINING split, never the test split.

Trials train on the rest of the training split and are scored on the validation images, which the runner takes as
the run's held-out split: every metric value then records the validation split's digest, the test split's stays
unread, and choosing settings by their score cannot leak the test images into a later comparison.
"""

from __future__ import annotations

import torch

from bench.core.data import ImageData, tensor_digest
from bench.core.errors import UsageError

#: fixed seed of the validation permutation: the split never depends on a run's or a study's seed
VALIDATION_SEED = 20_220
#: the fraction of the training split held out, unless told otherwise
VALIDATION_FRACTION = 0.1


def carve_validation(data: ImageData, fraction: float = VALIDATION_FRACTION) -> ImageData:
    """The dataset with its training split cut in two by a fixed permutation: `train` the rest, `test` the
    validation images (with labels, where the dataset has them). The digests are the new splits' own."""
    n = len(data.train)
    n_val = round(n * fraction)
    if not 0 < fraction < 1 or n_val < 2 or n - n_val < 2:
        raise UsageError(f"--validation {fraction} of {n} training images leaves too few on one side; give a "
                         "fraction in (0, 1) that leaves at least 2 images each")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    val, rest = perm[:n_val].sort().values, perm[n_val:].sort().values

    def labels(idx: torch.Tensor) -> torch.Tensor | None:
        return data.train_labels[idx] if data.train_labels is not None else None

    train, held = data.train[rest], data.train[val]
    return ImageData(data.name, train, held, labels(rest), labels(val), source=data.source,
                     split=f"validation: {n_val} of the {n} training images ({data.split} split), seed "
                           f"{VALIDATION_SEED}; the test split unused",
                     train_sha256=tensor_digest(train), test_sha256=tensor_digest(held),
                     source_sha256=data.source_sha256)
