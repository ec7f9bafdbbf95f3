"""Where a number came from: code version, package versions, device."""

from __future__ import annotations

import fnmatch
import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__

PACKAGES = ("torch", "torchvision", "torch-fidelity", "lpips", "scikit-image", "numpy", "pandas")


@functools.cache
def code_version() -> str:
    """git commit (+"-dirty") of the checkout the code runs from, else the package version."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"git:{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"aegan-bench {__version__}"


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "missing"
    return out


#: directions of a metric key: which way is better. CLOSEST_TO_1 is for ratios to the real images (sharpness):
#: 3.0 is as far off as 1/3, so they are read as the distance |ln x| from 1, lower being better
#: (bench.core.stats.as_lower); "higher is better" would reward noise
LOWER, HIGHER, CLOSEST_TO_1 = "lower", "higher", "closest to 1"
DIRECTIONS = (LOWER, HIGHER, CLOSEST_TO_1)


# --- comparability: the one rule reports and compare apply ---------------------------------------------------
#: provenance entries that say how a number was measured: two numbers that differ in one are not comparable.
#: Metrics also record outcome diagnostics (solver iterations, timings, intermediate statistics), which may
#: differ between any two runs; those are listed in a note, never refused.
MEASUREMENT_KEYS = (
    "metric", "implementation", "function", "version", "reduction", "unit", "reference", "statistic", "batch_size",
    "dataset", "split", "*_split", "resolution", "resize*", "image_format", "pixel_range", "data_range", "input_range",
    "n_images", "n_images_*", "n_samples", "n_latents", "n_real", "n_fake", "n_generated", "n_train", "n_test",
    "n_pairs", "n_reference*", "n_classes", "kid_subset*", "kid_seed", "prior", "latent_dim", "feature_dim",
    "feature_extractor", "feature_layer", "feature_mode", "net", "k", "space", "weights", "weights_sha256",
    "*sha256*", "*hash*",
)
#: entries that may differ, with a warning: the same measurement on other hardware, arithmetic or package versions.
#: Weights trained by several processes (train_world_size, train_batch_per_rank; absent for one) are flagged, not
#: refused: the global batch, steps and learning rates are those of one process, only BatchNorm's batch statistics
#: (per process on the CPU) and the random streams differ (bench.core.distributed.training_provenance)
WARN_PROVENANCE = ("device", "device_model", "tf32", "dtype", "*_dtype", "*_device", "*_version", "torch_fidelity", "lpips", "weights_source",
                   "train_world_size", "train_batch_per_rank")
#: entries that differ between comparable runs by design, not even worth a note
IGNORED_PROVENANCE = ("seed", "eval_seconds", "run_dir", "metric", "reason")
#: the digests of the images a value was computed on: different splits are refused unless asked for
SPLIT_DIGESTS = ("*split_sha256",)


def matches_any(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def is_setting(key: str) -> bool:
    """Whether a provenance entry defines the measurement (values that differ in it are not comparable)."""
    return matches_any(key, MEASUREMENT_KEYS) and not matches_any(key, WARN_PROVENANCE)


def settings(prov: dict[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """The entries of a provenance that must agree for two values to be compared, as canonical JSON texts."""
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in sorted(prov.items())
            if is_setting(k) and not matches_any(k, ignore)}


def describe_difference(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    sa, sb = settings(a, ignore), settings(b, ignore)
    return "; ".join(f"{k}: {a.get(k, '(absent)')!r} vs {b.get(k, '(absent)')!r}"
                     for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k))
