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
    marks = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or ["no avx512_bf16/amx"]
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({', '.join(marks)}; {os.cpu_count()} cores)"
