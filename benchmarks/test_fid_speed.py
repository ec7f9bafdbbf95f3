"""FID's cost on a CPU: torch-fidelity's fp32 default against the bf16 fast path (metrics.fidelity), and the FID
each gives on two real folders.

Not part of the default `pytest` run (testpaths is tests/, and addopts skips benchmarks). Run it with

    python -m pytest benchmarks/test_fid_speed.py -o addopts="" -p no:cacheprovider -s

Speed is feature extraction through torch-fidelity's own loop (no DataLoader workers), in images per wall
second and per CPU second. The speed-up is judged on CPU time: on a machine shared with other jobs, wall time
measures the neighbours as much as the code. Both numbers are printed and kept in the benchmark's extra_info.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from metrics.fidelity import EXTRACTORS, UInt8Images, fid_kid
from metrics.weights import inception_weights

ROOT = Path(__file__).resolve().parent.parent
N_SPEED = 256  # CIFAR-like images timed per extractor (two full batches of the bf16 path)
N_FID = 250  # images in each of the two folders whose FID is compared
RATES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def cifar10() -> Path:
    """The real CIFAR-10 folders (train/, test/), unpacked from ../shared/data as tests/conftest.py does."""
    env = os.environ.get("AEGAN_BENCH_SHARED_DATA")
    src = Path(env) if env else ROOT.parent / "shared" / "data"
    if not (src / "unpack.sh").exists():
        pytest.skip("../shared/data is not present")
    dest = Path(os.environ.get("AEGAN_BENCH_UNPACKED", ROOT.parent / "shared-data-cache"))
    out = subprocess.run(["bash", str(src / "unpack.sh"), str(dest)], capture_output=True, text=True, check=True,
                         timeout=600)
    return Path(out.stdout.strip().splitlines()[-1]) / "cifar10"


def read_folder(folder: Path, n: int) -> torch.Tensor:
    """n images spread over the sorted files of a folder (all classes), read as torch-fidelity reads them."""
    from bench.commands.score import list_images, read_image

    files = list_images(folder)
    files = files[:: max(1, len(files) // n)][:n]
    return torch.stack([read_image(f, rgb=True) for f in files])


def extractor(dtype: str):
    from torch_fidelity.utils import create_feature_extractor

    return create_feature_extractor(EXTRACTORS.get(dtype)[0], ["2048"], cuda=False, verbose=False,
                                    feature_extractor_weights_path=str(inception_weights().path))


def extract(dtype: str, fe, images: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's own extraction loop, at the batch size metrics.fidelity uses for the dtype."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    return get_featuresdict_from_dataset(UInt8Images(images), fe, EXTRACTORS.get(dtype)[1], False, True, False)["2048"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_feature_extraction_speed(benchmark, cifar10, dtype):
    images = read_folder(cifar10 / "test", N_SPEED)
    fe = extractor(dtype)  # built once per evaluation: not part of the per-image cost
    extract(dtype, fe, images[:4])  # warm-up: kernels chosen
    t, c = time.perf_counter(), time.process_time()
    feats = benchmark.pedantic(extract, args=(dtype, fe, images), rounds=1, iterations=1)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert feats.shape == (N_SPEED, 2048)
    RATES[dtype] = {"images_per_s": N_SPEED / wall, "images_per_cpu_s": N_SPEED / cpu}
    benchmark.extra_info.update(RATES[dtype], extractor=EXTRACTORS.get(dtype)[0], batch=EXTRACTORS.get(dtype)[1],
                                threads=torch.get_num_threads())
    print(f"\n{dtype}: {RATES[dtype]['images_per_s']:.2f} images/s, {RATES[dtype]['images_per_cpu_s']:.2f} "
          f"images per CPU second ({torch.get_num_threads()} threads)")


def test_speedup_at_least_3x(benchmark):
    if set(RATES) != {"fp32", "bf16"}:
        pytest.skip("run together with test_feature_extraction_speed")
    cpu = RATES["bf16"]["images_per_cpu_s"] / RATES["fp32"]["images_per_cpu_s"]
    wall = RATES["bf16"]["images_per_s"] / RATES["fp32"]["images_per_s"]
    benchmark.extra_info.update(speedup_cpu=cpu, speedup_wall=wall)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nspeed-up bf16 / fp32: {cpu:.2f}x per CPU second, {wall:.2f}x wall")
    assert cpu >= 3.0


def test_fid_bf16_within_half_percent_of_fp32(benchmark, cifar10):
    """Two real folders (CIFAR-10 test and train, N_FID images each): FID and KID of both paths."""
    a, b = read_folder(cifar10 / "test", N_FID), read_folder(cifar10 / "train", N_FID)
    scores = {dt: fid_kid(a, b, dtype=dt, seed=2020) for dt in ("fp32", "bf16")}
    rel = abs(scores["bf16"]["fid"] - scores["fp32"]["fid"]) / scores["fp32"]["fid"]
    benchmark.extra_info.update(fid_fp32=scores["fp32"]["fid"], fid_bf16=scores["bf16"]["fid"], fid_rel_diff=rel,
                                kid_fp32=scores["fp32"]["kid"], kid_bf16=scores["bf16"]["kid"], n=N_FID)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nFID fp32 {scores['fp32']['fid']:.4f}, bf16 {scores['bf16']['fid']:.4f}: relative difference "
          f"{rel:.4%}; KID fp32 {scores['fp32']['kid']:.6f}, bf16 {scores['bf16']['kid']:.6f}")
    assert rel < 0.005
