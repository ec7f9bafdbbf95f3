"""Regression verdicts: pick two sets of runs with selectors, compare every metric with seed statistics.

Selector grammar (one string, terms joined by commas; a run must satisfy every term)::

    SELECTOR := TERM ("," TERM)*
    TERM     := FIELD "=" VALUE ("|" VALUE)*      run matches any of the values
              | FIELD "!=" VALUE ("|" VALUE)*     run matches none of them
              | WORD                              shorthand for variant=WORD

Fields: ``method`` (the registered method, so ``method=faae`` covers every faae variant), ``variant``
(the run's label: the variant name, or the method name for a plain run), ``dataset``, ``protocol``,
``code`` (code version, matched as a prefix: ``code=git:abc123`` covers ``git:abc123…`` and its ``-dirty``
form; ``code=current`` is the version of the code running now), ``tag``, ``seed``, ``config`` (config-hash
prefix) and ``run`` (run id). Values match exactly, or as globs with ``*`` and ``?`` (square brackets are
literal, since variant names hold them). Commas and ``|`` inside [...] belong to the value, e.g.
``variant=faae[loss.rec_weight=0,train.max_steps=30],dataset=mnist5k``.

Verdicts, per (method, dataset, metric key): the change is read in the key's direction (metrics.direction:
lower- or higher-is-better, or closest to 1, compared as |ln x|) against a relative tolerance (default 5%,
``--tolerance KEY=REL``).

- several seeds on both sides: Welch's t test (scipy.stats); "regressed"/"improved" need p < alpha AND a
  change beyond the tolerance; significant but smaller changes are "within tolerance";
- several seeds on one side, one on the other: the single value is tested against the spread of the
  many (a prediction interval, t with n-1 degrees of freedom), with the same two conditions;
- one seed per side: there is no seed variance; the verdict is the tolerance alone, and the output says so.

Wall-clock keys (``*per_s*``, ``*seconds*``) get no tolerance by default: they are shown as "not gated",
since on a shared machine they move with the load; ``--tolerance train_images_per_s=0.2`` gates on one.
A candidate run that diverged counts as a regression.
"""

from __future__ import annotations

from ..core.stats import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    DEFAULT_TOLERANCES,
    IMPROVED,
    NOISE,
    NOT_GATED,
    REGRESSED,
    VERDICTS,
    WITHIN_TOL,
    Stats,
    compare_values,
    parse_tolerances,
    tolerance_for,
)
from .render import render, table_rows, to_json
from .selectors import (
    SELECTOR_FIELDS,
    RunRecord,
    Selector,
    Term,
    check_tags,
    parse_selector,
    records_from_store,
)
from .verdicts import Comparison, KeyVerdict, ProvenanceMismatch, Side, compare

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TOLERANCE", "DEFAULT_TOLERANCES", "IMPROVED", "NOISE", "NOT_GATED", "REGRESSED",
           "SELECTOR_FIELDS", "VERDICTS", "WITHIN_TOL", "Comparison", "KeyVerdict", "ProvenanceMismatch", "RunRecord",
           "Selector", "Side", "Stats", "Term", "check_tags", "compare", "compare_values", "parse_selector",
           "parse_tolerances", "records_from_store", "render", "table_rows", "to_json", "tolerance_for"]
