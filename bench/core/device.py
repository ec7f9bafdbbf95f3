"""Devices and precision: which device a command runs on, its name for provenance, whether it computes bf16
natively, the precision "auto" stands for on it, and the autocast context of a precision ("bf16" or "fp32")."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
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
    where it is emulated is kept, with a warning (once) that it will be slow."""
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


def autocast(device: torch.device, precision: str):
    """bf16 autocast on the device for precision "bf16" (CPU and CUDA alike; a warning, once, where bf16 is
    emulated), nothing for "fp32"."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
