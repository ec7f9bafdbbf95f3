"""A trained method rebuilt from its run directory: the one loader the runner (refinements such as "faae+sc"),
`bench eval` and the report's figure grids share."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from bench.core.checkpoint import CheckpointError
from bench.core.config import RunConfig
from bench.core.layout import OutDir

from .base import METHODS, Method, ModelSpec


def build_method(cfg: RunConfig, data: Any) -> Method:
    """An untrained method of the run's config, for data of `data.channels` channels at `data.resolution`."""
    cls = METHODS.get(cfg.method)
    spec = ModelSpec(channels=data.channels, resolution=data.resolution, latent_dim=cfg.model.latent_dim,
                     width=cfg.model.width, prior=cfg.model.prior)
    return cls(spec, cls.resolve_params(cfg.params))


def default_params(method: str, protocol: str) -> dict[str, Any]:
    """A method's own parameters under a protocol, with no override."""
    cls = METHODS.get(method)
    return cls.params_dict(cls.resolve_params(cls.protocol_params.get(protocol, {})))


def run_checkpoint(cfg: RunConfig, out: Path) -> Path:
    """The checkpoint a run's weights come from: its own, <out>/runs/<run id>/last.pt, or for a refinement its base
    method's run with the same sections and seed (the refinement does not train). A refinement carries its base's
    config_defaults, so its resolved sections are the base run's: only the method and its parameters (the base's
    own under the protocol) differ, and the base's id is the base config's own run_id()."""
    base = METHODS.get(cfg.method).base_method
    if base is not None:
        cfg = dataclasses.replace(cfg, method=base, variant="", params=default_params(base, cfg.protocol))
    return OutDir(out).run(cfg.run_id()).checkpoint


def load_weights(method: Method, ckpt: dict[str, Any], path: Path) -> None:
    """The checkpoint's weights into the method (a refinement takes its base's); a checkpoint of another model is
    a CheckpointError naming the file."""
    try:
        if type(method).base_method is not None:
            method.load_base_state(ckpt["model"])
        else:
            method.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as e:  # a checkpoint of another model, or one without weights
        line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(path, f"does not fit the run's model ({line})") from None


def load_trained(cfg: RunConfig, ckpt: dict[str, Any], path: Path, data: Any,
                 device: torch.device | str = "cpu") -> Method:
    """The run's method with the weights of `ckpt` (read from `path`), on the device, laid out as the runner
    trains it, in eval mode."""
    method = build_method(cfg, data)
    load_weights(method, ckpt, path)
    return placed(method, cfg, device).eval()


def placed(method: Method, cfg: RunConfig, device: torch.device | str) -> Method:
    """The method on the device, in the memory layout the run trains with (channels_last unless the config says
    otherwise): the one placement that training, evaluation and benchmarks share."""
    method = method.to(device)
    return method.to(memory_format=torch.channels_last) if cfg.train.channels_last else method
