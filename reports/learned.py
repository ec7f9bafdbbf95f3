"""Has a method learned what a claim compares? A method that has not is named, never "beaten".

After a short budget an encoder may not invert its generator at all (BiGAN's and ALI's re-encoding ratios are
0.998 and 0.988 after `quick`'s 2,000 steps on CIFAR-10): a claim that F-AAE inverts better than BiGAN would then
measure the step budget, not BiGAN. Each test here reads stored values only (the row's mean over its seeds) and
gates result keys: a claim on a gated key involving a method that fails a test, or whose test cannot be run for
want of the values it reads, is undecided with the reason; report tables mark the gated cells of a failing row.

| test | passes when | gates |
| --- | --- | --- |
| `inversion` | `reencode_ratio` < MAX_REENCODE_RATIO | re-encoding, cycle and reconstruction keys |
| `reconstruction` | `recon_mse` < MAX_RECON_FRACTION x `recon_mse_random_pair` | reconstruction keys |
| `generation` | `fid_samples` < `single_image_fid`, the FID of a generator collapsed onto one typical test image | sample keys |

The generation test's baseline is not blurred or pixel-shuffled test images, which would cost an Inception pass the
store does not hold: it is the FID of a generator that draws one real test image every time, the median over the
reference images (metrics.fidelity.single_image_fid: exact from the reference's features, no extra pass). On
`mnist5k` (500 vs 500 images, fp32 features) the scale is: training vs test images 65, box-blurred (5x5) test
images 112, single_image_fid 197, pixel-shuffled test images 319, the mean test image repeated 361, blank images
474; on CIFAR-10 (500): training vs test 128, single_image_fid 402, pixel-shuffled 431 (200 images), blank 755.
Blank, noise-like and collapsed generators fail it; a blurry generator that has learned the digits passes.
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.core.registry import Registry

from .results import Run, Value

#: re-encoding ratio (1: E(G(z)) carries nothing of z) below which G and E count as inverting each other. Encoders
#: that have not learned measure 0.99-1.00 (BiGAN, ALI at `quick` on CIFAR-10); AAE, whose reconstructions are good,
#: 0.56-0.65; F-AAE ~0.1 (docs/quick-protocol-tuning.md). 0.9 separates them with room for seed noise
MAX_REENCODE_RATIO = 0.9
#: a reconstruction must be closer to its own image than this fraction of a random pair's MSE (1: reconstructions
#: unrelated to their inputs; BiGAN 0.95 and ALI 0.62 at `quick` on CIFAR-10, AAE 0.09, F-AAE 0.11)
MAX_RECON_FRACTION = 0.5
#: where the generation test reads its baseline: the provenance entry metrics.fidelity stores with fid_samples
BASELINE_FIELD = "single_image_fid"
#: gated keys: what a failing row's cells say nothing about
RECON_KEYS = ("recon_*", "lpips", "*_recon")


@dataclass(frozen=True)
class Outcome:
    test: str
    #: what the method must have learned, e.g. "to invert its generator"
    what: str
    #: None: the values the test reads are not stored
    passed: bool | None
    reason: str


#: a row's stored values (key -> the values of its seeds, n/a left out) -> (passed or None, the reason)
Judge = Callable[[dict[str, list[Value]]], tuple[bool | None, str]]


@dataclass(frozen=True)
class LearnedTest:
    name: str
    what: str
    #: result-key globs whose values mean nothing for a method that fails the test
    gates: tuple[str, ...]
    judge: Judge

    def applies(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.gates)


def _mean(vals: dict[str, list[Value]], key: str) -> float | None:
    got = vals.get(key)
    return statistics.fmean(v.value for v in got) if got else None


def _inverts(vals: dict[str, list[Value]]) -> tuple[bool | None, str]:
    r = _mean(vals, "reencode_ratio")
    if r is None:
        return None, "reencode_ratio not measured: --metrics reencode"
    ok = r < MAX_REENCODE_RATIO
    return ok, f"reencode_ratio {r:.3g} {'<' if ok else '>='} {MAX_REENCODE_RATIO}"


def _reconstructs(vals: dict[str, list[Value]]) -> tuple[bool | None, str]:
    mse, chance = _mean(vals, "recon_mse"), _mean(vals, "recon_mse_random_pair")
    if mse is None or not chance:
        return None, "recon_mse or its random-pair baseline not measured: --metrics mse"
    ok = mse < MAX_RECON_FRACTION * chance
    return ok, f"recon_mse {mse / chance:.2f}x a random pair's, {'<' if ok else '>='} {MAX_RECON_FRACTION}"


def _generates(vals: dict[str, list[Value]]) -> tuple[bool | None, str]:
    got = vals.get("fid_samples")
    if not got:
        return None, "fid_samples not measured: --metrics fid"
    baselines = [v.provenance.get(BASELINE_FIELD) for v in got]
    if any(b is None for b in baselines):
        return None, (f"fid_samples stored without {BASELINE_FIELD} (older code): re-evaluate with "
                      "`bench eval --metrics fid --overwrite`")
    fid, baseline = statistics.fmean(v.value for v in got), statistics.fmean(baselines)
    ok = fid < baseline
    return ok, f"fid_samples {fid:.4g} {'<' if ok else '>='} {baseline:.4g} of a generator collapsed onto one image"


LEARNED: Registry[LearnedTest] = Registry("learned test")
for _t in (
    LearnedTest("inversion", "to invert its generator", ("reencode_*", "cycle_*", *RECON_KEYS), _inverts),
    LearnedTest("reconstruction", "to reconstruct", RECON_KEYS, _reconstructs),
    LearnedTest("generation", "to generate", ("*_samples", "sample_*"), _generates),
):
    LEARNED.add(_t.name, _t)


def tests_for(key: str) -> list[LearnedTest]:
    """The learned tests a key's values depend on."""
    return [t for _, t in LEARNED.items() if t.applies(key)]


def row_values(runs: list[Run], values: dict[str, dict[str, Value]]) -> dict[str, list[Value]]:
    """key -> the stored values of a row's seeds (n/a left out)."""
    out: dict[str, list[Value]] = {}
    for r in runs:
        for k, v in values[r.run_id].items():
            if v.value is not None:
                out.setdefault(k, []).append(v)
    return out


def outcomes(runs: list[Run], values: dict[str, dict[str, Value]], keys: Iterable[str]) -> list[Outcome]:
    """Every learned test that gates one of `keys`, on a row's runs, in registry order."""
    keys = list(keys)
    vals = row_values(runs, values)
    out = []
    for _, t in LEARNED.items():
        if any(t.applies(k) for k in keys):
            passed, reason = t.judge(vals)
            out.append(Outcome(t.name, t.what, passed, reason))
    return out
