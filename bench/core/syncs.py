"""Host synchronisations a block of code asks for, counted where the code can see them.

On a GPU the host waits for the device whenever it needs a value or a shape that the device computes: a
`.item()`, `bool(tensor)`, `.tolist()`, indexing with a boolean mask (its result's size is data-dependent),
`nonzero`, `unique`, a copy to the CPU. Those are the same ATen operators on every device, so counting them
under a TorchDispatchMode finds them on the CPU too, where no GPU is there to stall: a test on a CPU-only machine
then fails on exactly the code that would stall a GPU. On CUDA, `torch.cuda.set_sync_debug_mode` is the
authority (it sees syncs inside kernels' launches as well); `HostSyncs` adds its warnings to the count.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: ATen operators whose result the host must wait for (a value, or a shape that depends on the data)
SYNCING_OPS = frozenset({
    "aten._local_scalar_dense",  # .item(), float(), bool(), .tolist() of one element
    "aten.is_nonzero",
    "aten.nonzero", "aten.nonzero_static", "aten.masked_select", "aten.unique", "aten._unique2",
    "aten.unique_consecutive", "aten.unique_dim", "aten.equal",
    "aten.repeat_interleave",  # without output_size, its length is read from the device
})

#: indexing operators: with a boolean mask among their indices they count its true entries on the device first
MASK_INDEXING = frozenset({"aten.index", "aten.index_put_", "aten.index_put", "aten._index_put_impl_"})


def _op_name(func: Any) -> str:
    return f"aten.{func._schema.name.split('::', 1)[-1]}" if hasattr(func, "_schema") else str(func)


class HostSyncs(TorchDispatchMode):
    """A context that counts the synchronising operations run inside it (`counts`, by operator) and copies
    between devices where one side is the CPU (`cross_device`). On CUDA it also turns on PyTorch's sync debug
    mode and counts its warnings (`cuda_warnings`)."""

    def __init__(self, host_tensors: tuple[torch.Tensor, ...] = ()) -> None:
        """`host_tensors`: tensors that stay on the CPU by design whatever the device, whose reads cost no wait
        (optimizer_host_tensors: Adam's step counts)."""
        super().__init__()
        self._host = {id(t) for t in host_tensors}
        self.counts: Counter[str] = Counter()
        self.cuda_warnings = 0
        self._caught: Any = None
        self._debug_mode = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.cuda_warnings

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        if name in SYNCING_OPS:
            if not (args and isinstance(args[0], torch.Tensor) and id(args[0]) in self._host):
                self.counts[name] += 1
        elif name in MASK_INDEXING:
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())):
                self.counts["boolean mask index"] += 1
        elif name in ("aten._to_copy", "aten.copy_"):
            devices = {a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
            if "device" in kwargs and kwargs["device"] is not None:
                devices.add(torch.device(kwargs["device"]).type)
            if "cpu" in devices and len(devices) > 1:  # device to host (or back): the host waits
                self.counts["cross-device copy"] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self._debug_mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        if self._caught is not None:
            self._caught.__exit__(*exc)
            torch.cuda.set_sync_debug_mode(self._debug_mode)
            self.cuda_warnings = sum("synchroniz" in str(w.message) for w in self._records)
            self._caught = None
        return out

    def describe(self) -> str:
        parts = [f"{n} x {k}" for k, n in sorted(self.counts.items())]
        if self.cuda_warnings:
            parts.append(f"{self.cuda_warnings} x CUDA sync warning")
        return ", ".join(parts) or "none"


def optimizer_host_tensors(optimizers: Any) -> tuple[torch.Tensor, ...]:
    """The step counts of Adam-like optimisers: PyTorch keeps them on the CPU (unless capturable or fused) so that
    reading them never waits for a GPU. They exist after an optimiser's first step."""
    return tuple(s["step"] for opt in optimizers for s in opt.state.values()
                 if isinstance(s.get("step"), torch.Tensor) and s["step"].device.type == "cpu")
