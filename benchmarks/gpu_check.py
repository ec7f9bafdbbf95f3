"""One-shot check of the suite on a CUDA GPU: what the CPU-only test suite cannot confirm, in one run of minutes.

Run: python benchmarks/gpu_check.py --out DIR        (on one CUDA GPU, offline; about 6 minutes on an H100-class GPU)

Each stage is recorded as passed / failed / skipped with its details and seconds, a failing stage does not stop the
others, and the whole goes to DIR/gpu_check.json and DIR/gpu_check.md:

1. environment: GPU model, compute capability, cuDNN, bf16 native, TF32 defaults, what train.precision=auto picks;
2. the `cuda` tests (exact Inception features within 1e-5 of the CPU's with TF32 on by default, no host sync in a
   training step, a resumed run equal to an uninterrupted one with deterministic kernels);
3. a smoke run of every method and refinement (`bench run --protocol smoke --device cuda`);
4. 400 steps of `quick` F-AAE and AAE on mnist5k with their evaluation;
5. exact FID/KID against torch-fidelity on the same images (FID within 0.1%, KID within 1%), with random
   Inception weights in torch-fidelity's architecture (the 92 MB file is not needed; the real file is used too when
   it is in the weights cache);
6. training images/s per method at batch 64 and 256 (fp32 with TF32 off, and the precision `auto` picks);
7. host synchronisations per training step, per method (bench.core.syncs).

Without CUDA it runs its CPU fallback: the same stages, sized down to seconds (no `cuda` tests, few steps and
images), so that the script is known to start wherever it is copied; tests/test_gpu_check.py runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

METHODS = ("faae", "aae", "bigan", "ali", "latent-recovery")
REFINEMENTS = ("faae+sc", "aae+sc", "bigan+sc", "ali+sc")
#: metrics that need no pretrained weights (those that do are added when their weights are in the cache)
OFFLINE_METRICS = ("mse", "image_quality", "reencode", "cycle", "sharpness", "throughput")
FID_TOLERANCE, KID_TOLERANCE = 1e-3, 1e-2


@dataclass(frozen=True)
class Size:
    """How much each stage does: the GPU's sizes and the CPU fallback's."""

    quick_steps: int
    fid_images: int
    speed_batches: tuple[int, ...]
    speed_steps: int
    smoke_methods: tuple[str, ...]
    quick_eval_images: int


GPU_SIZE = Size(400, 1000, (64, 256), 30, (*METHODS, *REFINEMENTS), 1000)
CPU_SIZE = Size(4, 8, (16,), 2, ("faae", "faae+sc"), 32)


class Check:
    """The stages' outcomes, in order."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            details = fn()
            status = details.pop("status", "passed")
        except Exception as e:  # a stage that fails is recorded; the others still run
            details = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
            status = "failed"
        self.stages.append({"stage": name, "status": status, "seconds": round(time.perf_counter() - t0, 1),
                            **details})
        print(f"[{status}] {name} ({self.stages[-1]['seconds']} s)", flush=True)


def bench_cmd(args: list[str], out: Path, env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "w") as f:
        return subprocess.run([sys.executable, "-m", "bench", *args, "--out", str(out)], cwd=ROOT, env=env,
                              stdout=f, stderr=subprocess.STDOUT, timeout=1200)


def cached_weights(name: str):
    """Pretrained weights already in the cache, or None (never fetched here: the check runs offline)."""
    from metrics.weights import WeightsError, acquire

    try:
        return acquire(name, sources=("cache", "torch-home"))
    except (WeightsError, OSError):
        return None


def random_inception(path: Path, seed: int = 0):
    """torch-fidelity's inception-v3-compat with random weights (He-normal convolutions, so that activations keep
    their scale through the 94 layers), saved where both torch-fidelity and this suite load it."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    from metrics.weights import Weights, state_dict_sha256

    saved_load, saved_lsd = torch.load, tfi.FeatureExtractorInceptionV3.load_state_dict
    torch.manual_seed(seed)
    try:  # build the module without its weights file
        tfi.torch.load = lambda *a, **k: {}
        tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
        model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
    finally:
        tfi.torch.load, tfi.FeatureExtractorInceptionV3.load_state_dict = saved_load, saved_lsd
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    sd = {k: v.float() for k, v in model.state_dict().items()}
    torch.save(sd, path)
    return Weights("inception-v3-compat (random, seed 0)", path, state_dict_sha256(sd), "benchmarks/gpu_check.py")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where gpu_check.json, gpu_check.md and the runs go")
    p.add_argument("--cpu", action="store_true", help="run the CPU fallback even where CUDA exists")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    size = GPU_SIZE if cuda else CPU_SIZE
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    check = Check()
    t0 = time.perf_counter()

    check.stage("environment", lambda: environment(device))
    check.stage("cuda tests", lambda: cuda_tests(cuda, env, out))
    check.stage("smoke run of every method and refinement", lambda: smoke_runs(size, device, env, out))
    check.stage(f"quick faae and aae, {size.quick_steps} steps, evaluated", lambda: quick_runs(size, device, env, out))
    check.stage("exact FID/KID against torch-fidelity", lambda: fid_agreement(size, device, out))
    check.stage("training images/s per method", lambda: train_speed(size, device))
    check.stage("host synchronisations per training step", lambda: syncs_per_step(device))

    report = {"device": str(device), "fallback": not cuda, "seconds": round(time.perf_counter() - t0, 1),
              "stages": check.stages}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    failed = [s["stage"] for s in check.stages if s["status"] == "failed"]
    print(f"{len(check.stages) - len(failed)} of {len(check.stages)} stages passed or skipped in {report['seconds']} s"
          f"; {out / 'gpu_check.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --- the stages -----------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    from bench.core.device import bf16_native, device_provenance, resolve_precision

    info: dict[str, Any] = {"torch": torch.__version__, **device_provenance(device),
                            "bf16_native": bf16_native(device), "auto_precision": resolve_precision("auto", device),
                            "tf32_default": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                             "cudnn": torch.backends.cudnn.allow_tf32}}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def cuda_tests(cuda: bool, env: dict[str, str], out: Path) -> dict[str, Any]:
    if not cuda:
        return {"status": "skipped", "reason": "no CUDA: the cuda tests skip themselves"}
    log = out / "cuda_tests.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_gpu_ready.py"], cwd=ROOT,
                           env={**env, "AEGAN_BENCH_TEST_CUDA": "1"}, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    tail = log.read_text().strip().splitlines()[-1:]
    return {"status": "passed" if r.returncode == 0 else "failed", "summary": tail, "log": str(log)}


def _metrics(device: torch.device) -> list[str]:
    """The offline metrics, and on a GPU those whose weights are in the cache (on the CPU fallback they would cost
    minutes and check nothing the suite does not)."""
    if device.type != "cuda":
        return [*OFFLINE_METRICS]
    extra = [m for m, w in (("fid", "inception-v3-compat"), ("lpips", "lpips-alex")) if cached_weights(w)]
    return [*OFFLINE_METRICS, *extra]


def smoke_runs(size: Size, device: torch.device, env: dict[str, str], out: Path) -> dict[str, Any]:
    from bench.core.store import Store

    dest = out / "smoke"
    r = bench_cmd(["run", "--methods", ",".join(size.smoke_methods), "--protocol", "smoke", "--device", device.type,
                   "--metrics", ",".join(_metrics(device))], dest, env, out / "smoke.log")
    runs = {row["method"]: row["status"] for row in Store(dest / "results.db").runs()} \
        if (dest / "results.db").exists() else {}
    ok = r.returncode == 0 and all(runs.get(m) == "done" for m in size.smoke_methods)
    return {"status": "passed" if ok else "failed", "exit": r.returncode, "runs": runs, "log": str(out / "smoke.log")}


def quick_runs(size: Size, device: torch.device, env: dict[str, str], out: Path) -> dict[str, Any]:
    from bench.core.store import Store

    dest = out / "quick"
    n = size.quick_eval_images
    r = bench_cmd(["run", "--methods", "faae,aae", "--dataset", "mnist5k", "--protocol", "quick", "--device",
                   device.type, "--metrics", ",".join(_metrics(device)), "--set", f"train.max_steps={size.quick_steps}",
                   f"eval.n_images={n}", f"eval.n_samples={n}"], dest, env, out / "quick.log")
    values: dict[str, dict[str, float]] = {}
    if (dest / "results.db").exists():
        store = Store(dest / "results.db")
        for row in store.runs():
            values[row["method"]] = {v["key"]: v["value"] for v in store.metric_rows([row["run_id"]])
                                     if v["key"] in ("reencode_ratio", "recon_mse", "train_images_per_s", "fid_samples")}
    ok = r.returncode == 0 and set(values) == {"faae", "aae"}
    return {"status": "passed" if ok else "failed", "exit": r.returncode, "values": values}


def fid_agreement(size: Size, device: torch.device, out: Path) -> dict[str, Any]:
    import torch_fidelity

    from metrics.fidelity import UInt8Images, fid_kid

    gen = torch.Generator().manual_seed(0)
    n = size.fid_images
    # two different distributions: smooth blobs and noise, so FID is far from 0 and its relative error meaningful
    a = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    b = (torch.rand(n, 3, 8, 8, generator=gen) * 255).to(torch.uint8).repeat_interleave(4, 2).repeat_interleave(4, 3)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = {"random": random_inception(Path(tmp) / "inception-random.pth")}
        if device.type == "cuda" and (real := cached_weights("inception-v3-compat")) is not None:
            weights["real"] = real
        for name, w in weights.items():
            ours = fid_kid(a, b, weights=w, device=device)
            ref = torch_fidelity.calculate_metrics(
                input1=UInt8Images(a), input2=UInt8Images(b), fid=True, kid=True, kid_subset_size=min(n, 1000),
                feature_extractor_weights_path=str(w.path), cuda=device.type == "cuda", cache=False, verbose=False)
            fid_ref, kid_ref = ref["frechet_inception_distance"], ref["kernel_inception_distance_mean"]
            results[name] = {"fid": ours["fid"], "fid_torch_fidelity": fid_ref,
                             "fid_rel_diff": abs(ours["fid"] - fid_ref) / abs(fid_ref),
                             "kid": ours["kid"], "kid_torch_fidelity": kid_ref,
                             "kid_rel_diff": abs(ours["kid"] - kid_ref) / abs(kid_ref)}
    ok = all(r["fid_rel_diff"] <= FID_TOLERANCE and r["kid_rel_diff"] <= KID_TOLERANCE for r in results.values())
    return {"status": "passed" if ok else "failed", "n_images": n, "weights": results,
            "tolerance": {"fid": FID_TOLERANCE, "kid": KID_TOLERANCE},
            "note": "torch-fidelity's own pass keeps PyTorch's TF32 default; ours turns TF32 off"}


def _trainer(method: str, device: torch.device, precision: str, batch: int):
    from bench.core.config import parse_overrides
    from bench.core.data import load_dataset
    from bench.runs.resolve import resolve_config
    from bench.runs.state import make_state
    from bench.runs.step import BatchSource
    from methods.trained import build_method, placed

    cfg = resolve_config(method, "mnist5k", "quick", 0, parse_overrides([f"train.precision={precision}",
                                                                          f"train.batch_size={batch}"]), device=device)
    data = load_dataset(cfg.dataset, None, cfg.data)
    state = make_state(cfg, placed(build_method(cfg, data), cfg, device))
    source = BatchSource(data.train, device)
    return cfg, state, source, source.order(torch.randperm(len(data.train)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_speed(size: Size, device: torch.device) -> dict[str, Any]:
    from bench.core.device import resolve_precision, training_math
    from bench.runs.step import train_step

    table: dict[str, dict[str, float]] = {}
    precisions = sorted({"fp32", resolve_precision("auto", device)})
    for method in METHODS:
        for precision in precisions:
            for batch in size.speed_batches:
                cfg, state, source, order = _trainer(method, device, precision, batch)
                batches = [order[j * batch : (j + 1) * batch] for j in range(len(order) // batch)]
                with training_math(device, cfg.train.precision, cfg.train.deterministic):
                    for i in range(3):  # warm-up: cuDNN's algorithm choice, Adam's state
                        train_step(state, source.batch(batches[i % len(batches)], True), cfg, device)
                    _sync(device)
                    t0 = time.perf_counter()
                    for i in range(size.speed_steps):
                        train_step(state, source.batch(batches[i % len(batches)], True), cfg, device)
                    _sync(device)
                table.setdefault(method, {})[f"{precision} b{batch}"] = round(
                    batch * size.speed_steps / (time.perf_counter() - t0), 1)
    return {"images_per_s": table, "steps_timed": size.speed_steps,
            "note": "deterministic kernels on (train.deterministic's default)"}


def syncs_per_step(device: torch.device) -> dict[str, Any]:
    from bench.core.device import training_math
    from bench.core.syncs import HostSyncs, optimizer_host_tensors
    from bench.runs.step import LossMeter, train_step

    counts, details = {}, {}
    for method in METHODS:
        cfg, state, source, order = _trainer(method, device, "auto", 64)
        meter = LossMeter()
        with training_math(device, cfg.train.precision, cfg.train.deterministic):
            meter.add(train_step(state, source.batch(order[:64], True), cfg, device), 0)
            _sync(device)
            with HostSyncs(optimizer_host_tensors(state.optimizers.values())) as syncs:
                meter.add(train_step(state, source.batch(order[64:128], True), cfg, device), 1)
        counts[method], details[method] = syncs.total, syncs.describe()
    return {"status": "passed" if not any(counts.values()) else "failed", "syncs_per_step": counts,
            "details": details}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['device']}{' (CPU fallback)' if report['fallback'] else ''}", "",
             f"{report['seconds']} s in all.", "", "| stage | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in report["stages"]]
    for s in report["stages"]:
        rest = {k: v for k, v in s.items() if k not in ("stage", "status", "seconds", "traceback")}
        lines += ["", f"## {s['stage']}", "", "```json", json.dumps(rest, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
