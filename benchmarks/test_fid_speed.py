"""FID's cost on a CPU: torch-fidelity's own fp32 extraction (`inception-v3-compat`, the reference) against the
suite's exact default (the same network, BatchNorm folded, channels_last, fp32) and the approximate bf16 mode,
side by side in one run, with the FID and KID each gives on two real folders, and what bounds the exact path:
its floating-point work (torch.utils.flop_counter, 2 FLOPs per multiply-add, as in the matmul rate) per second
against this CPU's fp32 matmul rate. The bf16 mode is timed only where the CPU computes bf16 natively
(AVX512-BF16 or AMX): elsewhere it is emulated, far slower than fp32, and skipped with a note. About 1-2
minutes on a 2-core CPU.

Not part of the default `pytest` run (testpaths is tests/). Run it on an otherwise idle machine with

    python -m pytest benchmarks/test_fid_speed.py -o addopts="" -p no:cacheprovider -s

and name the CPU (`lscpu`: model name, and whether the flags hold amx_bf16 / avx512_bf16) with the figures.
Speed is feature extraction through torch-fidelity's own loop (no DataLoader workers), in images per wall
second and per CPU second; each extractor is timed in alternating rounds, so that a change in the machine's
load falls on all of them alike.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bench.core.device import cpu_bf16_native
from benchmarks.cpu import cpu_name
from metrics.fidelity import FEATURES, UInt8Images, fid_value, inception_features, kid_value
from metrics.weights import inception_weights

ROOT = Path(__file__).resolve().parent.parent
N_SPEED = 48  # CIFAR-10 images per timed round
ROUNDS = 2
N_FID = 128  # images in each of the two folders whose FID is compared (the test suite checks 300 and 2,000)
REFERENCE = "inception-v3-compat"  # torch-fidelity's own extractor, as `fidelity --fid` runs it


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
    from bench.commands.score import read_image
    from bench.core.data import list_images

    files = list_images(folder)
    return torch.stack([read_image(f, rgb=True) for f in files[:: max(1, len(files) // n)][:n]])


def reference_features(images: torch.Tensor) -> torch.Tensor:
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    fe = reference_features.fe = getattr(reference_features, "fe", None) or create_feature_extractor(
        REFERENCE, ["2048"], cuda=False, verbose=False, feature_extractor_weights_path=str(inception_weights().path))
    return get_featuresdict_from_dataset(UInt8Images(images), fe, 64, False, True, False)["2048"]


#: the modes this CPU runs natively: bf16 only with native bf16 (emulated, it is slower than fp32 by far)
MODES = [m for m in FEATURES if m != "bf16" or cpu_bf16_native()]
EXTRACT = {"torch-fidelity fp32": reference_features,
           **{f"suite {m} ({FEATURES.get(m).label})": (lambda x, m=m: inception_features(x, mode=m)) for m in MODES}}


def matmul_rate(n: int = 2048, rounds: int = 5) -> float:
    """fp32 FLOP/s of a large square matmul: about the best this CPU does in fp32."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(rounds):
        a @ b
    return 2 * n**3 * rounds / (time.perf_counter() - t0)


def flops_per_image(images: torch.Tensor) -> float:
    """Floating-point operations of the exact extractor per image (resize, trunk and pooling)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        inception_features(images)
    return counter.get_total_flops() / len(images)


def test_extraction_speed_against_torch_fidelity(benchmark, cifar10):
    images = read_folder(cifar10 / "test", N_SPEED)
    for fn in EXTRACT.values():
        fn(images[:4])  # warm-up: extractor built, kernels chosen
    wall = dict.fromkeys(EXTRACT, 0.0)
    cpu = dict.fromkeys(EXTRACT, 0.0)
    for _ in range(ROUNDS):
        for name, fn in EXTRACT.items():
            t, c = time.perf_counter(), time.process_time()
            fn(images)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
    n = N_SPEED * ROUNDS
    ref = "torch-fidelity fp32"
    rates = {k: {"images_per_s": n / wall[k], "images_per_cpu_s": n / cpu[k], "speedup_wall": wall[ref] / wall[k],
                 "speedup_cpu": cpu[ref] / cpu[k]} for k in EXTRACT}
    benchmark.extra_info.update(rates=rates, threads=torch.get_num_threads(), images=n)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    flops, peak = flops_per_image(images[:2]), matmul_rate()
    exact = rates["suite fp32 (exact)"]["images_per_s"] * flops
    benchmark.extra_info.update(exact_gflop_per_s=exact / 1e9, fp32_matmul_gflop_per_s=peak / 1e9)
    print(f"\nCPU: {cpu_name()}, {torch.get_num_threads()} threads; {n} CIFAR-10 test images per extractor"
          + ("" if "bf16" in MODES else "; bf16 mode skipped: no native bf16 here (emulated, slower than fp32)"))
    for k, r in rates.items():
        print(f"  {k:32s} {r['images_per_s']:6.2f} images/s  {r['images_per_cpu_s']:6.2f} per CPU s  "
              f"{r['speedup_wall']:.2f}x wall, {r['speedup_cpu']:.2f}x CPU vs torch-fidelity")
    print(f"  exact path: {flops / 1e9:.2f} GFLOP/image, {exact / 1e9:.0f} GFLOP/s = {exact / peak:.0%} of this CPU's "
          f"fp32 matmul rate ({peak / 1e9:.0f} GFLOP/s, 2048x2048)")
    assert rates["suite fp32 (exact)"]["speedup_cpu"] > 1.2


def test_fid_agreement_with_torch_fidelity(benchmark, cifar10):
    """FID and KID of CIFAR-10 test vs train (N_FID each) from torch-fidelity's features and each mode's."""
    a, b = read_folder(cifar10 / "test", N_FID), read_folder(cifar10 / "train", N_FID)
    feats = {k: (fn(a), fn(b)) for k, fn in EXTRACT.items()}
    scores = {k: {**fid_value(*f), **kid_value(*f)} for k, f in feats.items()}
    ref = scores["torch-fidelity fp32"]
    print(f"\nFID / KID, {N_FID} vs {N_FID} CIFAR-10 images (test vs train)")
    for k, s in scores.items():
        print(f"  {k:32s} FID {s['fid']:.4f} ({s['fid'] / ref['fid'] - 1:+.4%})  KID {s['kid']:.6f} "
              f"({s['kid'] / ref['kid'] - 1:+.3%})")
    benchmark.extra_info.update(scores=scores, n=N_FID)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    exact = scores["suite fp32 (exact)"]
    assert abs(exact["fid"] / ref["fid"] - 1) < 1e-3 and abs(exact["kid"] / ref["kid"] - 1) < 1e-2
