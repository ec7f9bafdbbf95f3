"""The CPU a benchmark ran on, as its figures must name it: model, bf16 matrix instructions, cores."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flag_line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    if not {"avx512_bf16", "amx_bf16"} & flags:
        marks.append("no native bf16")
    caps = [f"{v}={os.environ[v]}" for v in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(v)]
    if caps:  # kernels restricted below the CPU's own instructions, e.g. to stand in for an AVX2-only CPU
        marks.append(f"kernels capped by {' '.join(caps)}")
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({', '.join(marks)}; {os.cpu_count()} cores)"
