"""Devices and precision: which device a command runs on, its name and model for provenance, whether it computes bf16
natively, the precision "auto" stands for on it, the math of a precision ("bf16" autocast, "tf32", or "fp32" with
TF32 off), and deterministic kernels for bit-exact resumes."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

#: oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its bf16 matrix kernels still run natively
_ONEDNN_BF16_ISAS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown --device {name!r}; valid: auto, cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; valid here: auto, cpu")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


#: CPU features that decide the speed and the arithmetic of this suite's kernels (docs/speed.md)
_CPU_MARKS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name and the features that matter here, e.g. "AMD EPYC (avx2, avx512f, avx512_bf16)"."""
    name = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model name")):
                name = line.split(":", 1)[1].strip()
                break
    marks = [m for m in _CPU_MARKS if m in _cpu_flags()]
    return f"{name} ({', '.join(marks) or 'no flags read'})"


def device_provenance(device: torch.device) -> dict[str, str]:
    """What a value measured on the device records beside `device`: the model (GPU name and compute capability,
    or the CPU's name and flags) and, on CUDA, the cuDNN version; values from different models are compared
    with a warning (bench.core.provenance.WARN_PROVENANCE)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"device_model": f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})",
                "cudnn_version": str(torch.backends.cudnn.version())}
    return {"device_model": cpu_model()}


def tf32_capable(device: torch.device) -> bool:
    """TensorFloat-32 exists on CUDA GPUs of compute capability 8.0 (Ampere) and later; a CPU has none."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on or off inside the block, restored after. PyTorch enables
    it for cuDNN convolutions by default, so an fp32 path on an Ampere or later GPU is TF32 (10-bit mantissa)
    unless this turns it off. It is a process-wide flag, read when a kernel launches: the block must hold the
    backward pass as well as the forward. Harmless (and without effect) where CUDA is absent."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def exact_fp32() -> contextlib.AbstractContextManager[None]:
    """The math of every exact path (FID/KID features, LPIPS, fp32 training): IEEE fp32, TF32 off."""
    return tf32(False)


#: cuBLAS' workspace for reproducible results (NVIDIA's cuBLAS docs, "Results reproducibility")
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels inside the block (train.deterministic): cuDNN's deterministic algorithms without
    autotuning, PyTorch's deterministic implementations (a warning, not an error, for an op that has none), and
    cuBLAS' fixed workspace (the variable must be set before the process's first cuBLAS call: bench.runs sets
    it before training). The CPU kernels used here are deterministic either way. Restored after."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux's /proc/cpuinfo lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (x86 AVX512-BF16 or AMX), so that bf16 autocast is
    faster than fp32. Without them PyTorch emulates bf16 and a training step is 7-10x slower than in fp32
    (docs/speed.md). An ISA cap set for oneDNN or ATen (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) below those
    instructions counts as their absence: the kernels then run without them."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in _ONEDNN_BF16_ISAS:
        return False
    if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() in ("default", "avx2", "zvector"):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(f) for f in probes):
        return any(f() for f in probes)
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def bf16_native(device: torch.device) -> bool:
    """bf16 computed in hardware on the device: CUDA GPUs that support it without emulation, CPUs per
    cpu_bf16_native."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older PyTorch: no emulation to tell apart
            return torch.cuda.is_bf16_supported()
    return cpu_bf16_native()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision "auto" stands for on the device: bf16 where it is native, else fp32. An explicit "bf16"
    where it is emulated is kept, with a warning (once) that it will be slow; "tf32" where TF32 does not exist
    (CPUs, GPUs before Ampere) is fp32, which is what such a device computes."""
    if precision == "tf32":
        return "tf32" if tf32_capable(device) else "fp32"
    native = bf16_native(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        _warn_emulated(device.type)
    return precision


@functools.cache
def _warn_emulated(device_type: str) -> None:
    warnings.warn(f"bf16 was asked for, but this {device_type.upper()} has no native bf16 (no AVX512-BF16 or AMX "
                  "on a CPU): it is emulated and several times slower than fp32; train.precision=auto picks fp32 "
                  "here", RuntimeWarning, stacklevel=3)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The math of a precision for a forward pass: bf16 autocast for "bf16" (CPU and CUDA alike; a warning, once,
    where bf16 is emulated), TF32 on for "tf32", and for "fp32" fp32 indeed (TF32 off; see `tf32`)."""
    resolved = resolve_precision(precision, device)
    if resolved == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return tf32(resolved == "tf32")


def training_math(device: torch.device, precision: str, deterministic_kernels: bool) -> contextlib.ExitStack:
    """The whole of training (forward and backward passes): TF32 on only for "tf32" (bf16 autocast keeps
    PyTorch's defaults for the fp32 ops it leaves), and deterministic kernels when asked."""
    stack = contextlib.ExitStack()
    resolved = resolve_precision(precision, device)
    if resolved != "bf16":
        stack.enter_context(tf32(resolved == "tf32"))
    stack.enter_context(deterministic(deterministic_kernels))
    return stack
