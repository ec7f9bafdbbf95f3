"""train.precision=auto: bf16 only where the device computes it natively, fp32 elsewhere; the precision actually
used is what the config, the run id and the provenance hold; an explicit bf16 where it is emulated warns once."""

from __future__ import annotations

import warnings

import pytest
import torch

from bench.core import device as dev
from bench.core.config import parse_overrides
from bench.runs.resolve import resolve_config

CPU = torch.device("cpu")


@pytest.fixture
def cpu_kind(monkeypatch):
    """Set whether this CPU has native bf16, for the length of a test."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(dev, "cpu_bf16_native", lambda: native)
        dev._warn_emulated.cache_clear()

    yield set_native
    dev._warn_emulated.cache_clear()


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_resolves_by_the_hardware_and_names_the_run(cpu_kind, native, expected):
    cpu_kind(native)
    cfg = resolve_config("faae", "mnist5k", "smoke", device=CPU)
    assert cfg.train.precision == expected
    # the run id hashes the resolved precision: an fp32 run and a bf16 run are two runs
    other = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides([f"train.precision={expected}"]), device=CPU)
    assert other.run_id() == cfg.run_id()
    flip = {"bf16": "fp32", "fp32": "bf16"}[expected]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides([f"train.precision={flip}"]),
                              device=CPU).run_id() != cfg.run_id()


def test_explicit_bf16_on_emulating_hardware_warns_once_and_is_kept(cpu_kind):
    cpu_kind(False)
    with pytest.warns(RuntimeWarning, match="no native bf16") as caught:
        cfg = resolve_config("faae", "mnist5k", "smoke", 0, parse_overrides(["train.precision=bf16"]), device=CPU)
        with dev.autocast(CPU, "bf16"):
            pass
    assert cfg.train.precision == "bf16"
    assert len([w for w in caught if "no native bf16" in str(w.message)]) == 1
    cpu_kind(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning at all
        with dev.autocast(CPU, "bf16"):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_isa_caps_count_as_missing_instructions(monkeypatch):
    """Kernels capped below AVX512-BF16 (oneDNN's or ATen's ISA variable) run bf16 emulated: auto says fp32."""
    dev.cpu_bf16_native.cache_clear()
    try:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert dev.cpu_bf16_native() is False
        dev.cpu_bf16_native.cache_clear()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
        assert dev.cpu_bf16_native() is False
        dev.cpu_bf16_native.cache_clear()
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        monkeypatch.delenv("ATEN_CPU_CAPABILITY")
        flags = dev._cpu_flags()
        if flags:  # Linux: the answer agrees with the CPU's own flags
            assert dev.cpu_bf16_native() == bool(flags & {"avx512_bf16", "amx_bf16"})
    finally:
        dev.cpu_bf16_native.cache_clear()


def test_cuda_asks_the_device_without_emulation(monkeypatch):
    asked = {}

    def supported(including_emulation: bool = True) -> bool:
        asked["emulation"] = including_emulation
        return True

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert asked == {"emulation": False}
