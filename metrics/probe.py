"""Linear probe: how much class information the encoder's codes carry, linearly.

A multinomial logistic regression (scikit-learn, L-BFGS) on standardised E(x) of training images,
scored on the encodings of the held-out images. Only datasets with labels have it; others get n/a with
the reason. The training set is capped so that the probe takes seconds and its cost stays in proportion
to the other encoder metrics: 5x the held-out images scored, at least 1,000 and at most 10,000.
"""

from __future__ import annotations

import warnings
from importlib import metadata

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .base import HIGHER, METRICS, EvalContext, Metric, MetricValue

MAX_TRAIN = 10_000
MIN_TRAIN = 1_000
TRAIN_PER_TEST = 5
MAX_ITER = 300
C = 1.0


def probe_train_count(n_train_available: int, n_test: int) -> int:
    return min(n_train_available, MAX_TRAIN, max(MIN_TRAIN, TRAIN_PER_TEST * n_test))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> tuple[float, dict]:
    """Accuracy of a standardised logistic regression fitted on (train_x, train_y), on (test_x, test_y);
    with facts about the fit (iterations, convergence) for the provenance."""
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(C=C, max_iter=MAX_ITER, solver="lbfgs", random_state=seed))
    # one BLAS thread: the problem is small, and multi-threaded OpenBLAS on a busy 2-core machine was 25x
    # slower (9.6 s vs 0.4 s for 2,500 x 256 features)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_x, train_y)
    acc = float((clf.predict(test_x) == test_y).mean())
    n_iter = int(np.max(clf[-1].n_iter_))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return acc, {"n_iter": n_iter, "converged": converged}


def not_available(keys, reason: str) -> list[MetricValue]:
    """n/a for a reason other than a missing capability (e.g. a dataset without labels)."""
    return [MetricValue(k, None, {"reason": reason}) for k in keys]


@METRICS.register()
class LinearProbe(Metric):
    name = "probe"
    description = ("linear probe: accuracy of a logistic regression on standardised E(x) of training images, "
                   "on held-out encodings (labelled datasets only)")
    requires = frozenset({"encode"})
    keys = {"probe_accuracy": HIGHER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        data = ctx.data
        if data.train_labels is None or data.test_labels is None:
            return not_available(self.keys, f"dataset {data.name} has no class labels")
        x_test = ctx.test_images()
        y_test = data.test_labels[: len(x_test)].numpy()
        n_train = probe_train_count(len(data.train), len(x_test))
        # a random subset rather than the first images: split files can be ordered by class
        idx = torch.randperm(len(data.train), generator=ctx.generator(3))[:n_train]
        y_train = data.train_labels[idx].numpy()
        if len(np.unique(y_train)) < 2:
            return not_available(self.keys, "fewer than two classes among the probe's training images")
        enc = ctx.method.encode
        f_train = ctx.map_batches(enc, data.train[idx]).flatten(1).double().numpy()
        f_test = ctx.map_batches(enc, x_test).flatten(1).double().numpy()
        acc, fit = linear_probe(f_train, y_train, f_test, y_test, ctx.seed)
        counts = np.bincount(y_test)
        prov = {**ctx.base_provenance(), "implementation": "sklearn LogisticRegression (lbfgs) on StandardScaler",
                "sklearn_version": metadata.version("scikit-learn"), "blas_threads": 1, "n_train": int(n_train),
                "train_split": "train (random subset)", "n_images": len(x_test), "C": C, "max_iter": MAX_ITER,
                **fit, "n_classes": int(len(np.unique(np.concatenate([y_train, y_test])))),
                "chance_accuracy": float(counts.max() / counts.sum()), "feature_dim": int(f_train.shape[1])}
        return [MetricValue("probe_accuracy", acc, prov)]
