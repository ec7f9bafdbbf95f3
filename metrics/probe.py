"""Linear probe: how much class information the encoder's codes carry, linearly.

A multinomial logistic regression (scikit-learn, L-BFGS) on standardised E(x) of the held-out images,
scored by stratified k-fold cross-validation over those same encodings (each image is scored by a
probe that never saw it). It reuses the evaluation's one encoding of the held-out images: a probe fitted
on training images would encode thousands more, which costs minutes per thousand images for encoders
that are searches (`latent-recovery`, `+sc`). Only datasets with labels have it; others get n/a with the reason.
"""

from __future__ import annotations

import warnings
from importlib import metadata

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .base import HIGHER, METRICS, EvalContext, Metric, MetricValue, not_available

#: folds of the cross-validation; fewer when a class has fewer held-out images (at least 2)
FOLDS = 5
MAX_ITER = 300
C = 1.0


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


def cross_validated_probe(x: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> tuple[float, dict]:
    """Accuracy over stratified folds: each image is scored by a probe fitted on the other folds."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    correct, iters, converged = 0, 0, True
    for train, test in splitter.split(x, y):
        acc, fit = linear_probe(x[train], y[train], x[test], y[test], seed)
        correct += acc * len(test)
        iters, converged = max(iters, fit["n_iter"]), converged and fit["converged"]
    return correct / len(y), {"n_iter": iters, "converged": converged}


@METRICS.register()
class LinearProbe(Metric):
    name = "probe"
    description = ("linear probe: accuracy of a logistic regression on standardised E(x) of held-out images, "
                   f"by {FOLDS}-fold stratified cross-validation (labelled datasets only)")
    requires = frozenset({"encode"})
    keys = {"probe_accuracy": HIGHER}

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        data = ctx.data
        if data.test_labels is None:
            return not_available(self.keys, f"dataset {data.name} has no class labels")
        x = ctx.test_codes().flatten(1).double().numpy()
        y = data.test_labels[: len(x)].numpy()
        counts = np.bincount(y)
        present = counts[counts > 0]
        folds = min(FOLDS, int(present.min()))
        if len(present) < 2 or folds < 2:
            return not_available(self.keys, "the probe needs two or more classes with at least 2 held-out "
                                            f"images each (class counts: {present.tolist()})")
        acc, fit = cross_validated_probe(x, y, folds, ctx.seed)
        prov = {**ctx.base_provenance(), "implementation": "sklearn LogisticRegression (lbfgs) on StandardScaler",
                "sklearn_version": metadata.version("scikit-learn"), "blas_threads": 1, "n_images": len(x),
                "protocol": f"{folds}-fold stratified cross-validation on held-out encodings", "folds": folds,
                "C": C, "max_iter": MAX_ITER, **fit, "n_classes": int(len(present)),
                "chance_accuracy": float(counts.max() / counts.sum()), "feature_dim": int(x.shape[1])}
        return [MetricValue("probe_accuracy", acc, prov)]
