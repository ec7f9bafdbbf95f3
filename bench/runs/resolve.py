"""Config resolution: the resolved config of one run (defaults <- protocol preset <- the method's own defaults
and protocol parameters <- overrides, `resolve_config`), and variants: a registered method under other config
values, defined without code.

Two ways to define one, both validated exactly as `--set` overrides (bench.core.config.parse_overrides):

- inline in `--methods`: ``faae[loss.rec_weight=30,train.batch_size=32]``. The variant is named by the
  text itself with spaces removed (``faae[loss.rec_weight=30,train.batch_size=32]``), or by ``name=NAME``
  inside the brackets: ``faae[name=faae-lowre,loss.rec_weight=0.01]``.
- in a TOML file (``--variants FILE.toml``), one table per variant::

      [faae-lowre]
      base = "faae"                 # a registered method, or another variant of the file
      description = "rec weight 0.01"   # optional
      [faae-lowre.set]
      "loss.rec_weight" = 0.01

  and then ``--methods faae-lowre``. File variants also accept inline overrides: ``faae-lowre[train.max_steps=50]``.

Precedence, last wins: defaults <- protocol preset <- method's protocol params <- ``--set`` <- variant.
A variant is the more specific statement, so it wins over the run-wide ``--set``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from methods import METHODS

from ..core.config import ConfigError, RunConfig, apply_overrides, parse_overrides
from ..core.data import DATASETS
from ..core.device import resolve_device, resolve_precision
from ..core.paths import display
from ..core.protocols import PROTOCOLS
from ..core.registry import UnknownNameError
from ..core.toml_file import read_toml

#: characters a variant name may hold: it becomes part of run ids and run directory names
NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-\[\]=,]+$")
PLAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")
#: a key of a variant's set table: "section.key"
SET_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Variant:
    """A method (``base``) with config overrides; ``name`` is "" for the plain registered method."""

    name: str
    base: str
    #: section -> key -> value (strings, as from --set); see bench.core.config.parse_overrides
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""

    @property
    def label(self) -> str:
        return self.name or self.base


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside square brackets: 'faae[a=1,b=2],aae' -> ['faae[a=1,b=2]', 'aae']."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ']' in {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ConfigError(f"unbalanced '[' in {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _as_text(value: Any) -> str:
    """TOML values as --set text, so both paths share one validation (0.01 -> '0.01', true -> 'true')."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise ConfigError(f"variant values must be strings, numbers or booleans, got {value!r}")


def _merge(*layers: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def load_variants(path: str | Path) -> dict[str, Variant]:
    """Read a TOML file of named variants; bases may be methods or earlier/later variants of the file."""
    p = Path(path)
    raw = read_toml(p, "variants file")
    pending: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if not PLAIN_NAME_RE.fullmatch(name):  # first: the name is part of every message below
            raise ConfigError(f"{display(p)}: [{name!r}]: a variant name may hold letters, digits and _ . + - only")
        where = f"{display(p)}: [{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with base = \"METHOD\" and a [{name}.set] table")
        if name in METHODS:
            raise ConfigError(f"{where}: {name!r} is a registered method; give the variant another name")
        unknown = sorted(set(table) - {"base", "set", "description"})
        if unknown:
            shown = ", ".join(k if PLAIN_NAME_RE.fullmatch(k) else repr(k) for k in unknown)
            raise ConfigError(f"{where}: unknown key(s) {shown}; valid: base, set, description")
        if not isinstance(table.get("base"), str):
            raise ConfigError(f"{where} needs base = \"METHOD\" (one of {', '.join(METHODS)})")
        if not isinstance(table.get("description", ""), str):
            raise ConfigError(f"{where}: description must be a string")
        sets = table.get("set", {})
        if not isinstance(sets, dict):
            raise ConfigError(f"{where}: set must be a table of \"section.key\" = value")
        odd = next((k for k in sets if not SET_KEY_RE.fullmatch(k) and "." in k), None)
        if odd is not None:  # the override parser would name it as it is, control characters included
            raise ConfigError(f"{where}: set key {odd!r} must look like section.key (letters, digits and _)")
        try:
            overrides = parse_overrides([f"{k}={_as_text(v)}" for k, v in sets.items()])
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        pending[name] = {"base": table["base"], "overrides": overrides, "description": table.get("description", "")}

    # resolve chains (a variant of a variant) to a registered method, refusing cycles; iteratively, so that a
    # chain of any length (a generated file) needs no recursion
    resolved: dict[str, Variant] = {}
    for start in pending:
        chain = [start]  # start, its base, its base's base, ... up to a method or a variant resolved before
        while chain[-1] not in resolved:
            base = pending[chain[-1]]["base"]
            if base in chain:
                shown = chain if len(chain) <= 6 else [*chain[:3], "...", *chain[-2:]]
                raise ConfigError(f"{display(p)}: variants form a cycle: {' -> '.join([*shown, base])}")
            if base not in pending:
                if base not in METHODS:
                    raise UnknownNameError("base method of variant " + repr(chain[-1]), base, [*METHODS, *pending])
                break
            chain.append(base)
        for name in reversed(chain):
            if name in resolved:
                continue
            entry = pending[name]
            parent = resolved.get(entry["base"])
            if parent is None:  # the base is a registered method
                resolved[name] = Variant(name, entry["base"], entry["overrides"], entry["description"])
            else:
                resolved[name] = Variant(name, parent.base, _merge(parent.overrides, entry["overrides"]),
                                         entry["description"])
    return {name: resolved[name] for name in pending}


def parse_method_spec(spec: str, variants: dict[str, Variant] | None = None) -> Variant:
    """'faae', 'faae-lowre' (from a variants file) or 'faae[loss.rec_weight=30,name=x]' -> Variant."""
    variants = variants or {}
    text = "".join(spec.split())
    head, bracket, rest = text.partition("[")
    if head in variants:
        known = variants[head]
    elif head in METHODS:
        known = Variant("", head)
    else:
        raise UnknownNameError("method or variant", head, [*METHODS, *variants])
    if not bracket:
        return known
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
        raise ConfigError(f"{spec!r} must look like METHOD[section.key=value,...] (e.g. faae[loss.rec_weight=30])")
    items = split_top_level(rest[:-1])
    name = ""
    settings = []
    for item in items:
        if item.startswith("name="):
            name = item[len("name="):]
            if not PLAIN_NAME_RE.match(name):
                raise ConfigError(f"variant name {name!r} may hold letters, digits and _ . + - only")
            if name in METHODS:
                raise ConfigError(f"variant name {name!r} is a registered method; choose another")
        else:
            settings.append(item)
    if not settings:
        raise ConfigError(f"{spec!r} sets nothing; write e.g. {head}[loss.rec_weight=30]")
    overrides = parse_overrides(settings)
    if not name:
        name = f"{head}[{','.join(settings)}]"
        if not NAME_RE.match(name):
            raise ConfigError(f"{spec!r} holds characters a run id cannot; name the variant with name=NAME")
    return Variant(name, known.base, _merge(known.overrides, overrides), known.description)


def parse_methods(text: str, variants: dict[str, Variant] | None = None) -> list[Variant]:
    """A --methods value: comma-separated specs; commas inside [...] belong to the spec."""
    specs = [parse_method_spec(s, variants) for s in split_top_level(text)]
    labels = [v.label for v in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"--methods names {', '.join(dupes)} more than once")
    return specs


def resolve_variant(variant: Variant, dataset: str, protocol: str, seed: int,
                    overrides: dict[str, dict[str, str]] | None = None, device: torch.device | None = None) -> RunConfig:
    """The run's config: the runner's resolution with the variant's overrides on top of --set ones."""
    merged = _merge(overrides or {}, variant.overrides)
    if variant.overrides.get("method") and not fields(METHODS.get(variant.base).Params):
        raise ConfigError(f"variant {variant.name!r}: {variant.base} has no method.* parameters; set another section "
                          f"(data, model, optim, loss, train, eval)")
    # --set errors first, reported as they are without variants; what fails after that is the variant's
    plain = resolve_config(variant.base, dataset, protocol, seed, overrides, device=device)
    if not variant.name:
        return plain
    try:
        return resolve_config(variant.base, dataset, protocol, seed, merged, variant=variant.name, device=device)
    except ConfigError as e:
        raise ConfigError(f"variant {variant.name!r}: {e}") from None


# --- the resolved config of one run ------------------------------------------------------------------------------------
def resolve_config(method: str, dataset: str, protocol: str, seed: int = 0,
                   overrides: dict[str, dict[str, Any]] | None = None, variant: str = "",
                   device: torch.device | None = None) -> RunConfig:
    """Defaults <- protocol preset <- the method's own config defaults and protocol params <- user
    overrides, all validated; train.precision "auto" becomes what the device (default: the one `--device auto`
    picks) computes fastest, so the config, run id and provenance hold the precision actually used."""
    cls = METHODS.get(method)
    DATASETS.get(dataset)
    proto = PROTOCOLS.get(protocol)()
    cfg = RunConfig(method=method, dataset=dataset, protocol=protocol, seed=seed, variant=variant)
    cfg = apply_overrides(cfg, proto.sections(dataset))
    cfg = apply_overrides(cfg, cls.settings_for(protocol))
    params = {**cls.protocol_params.get(protocol, {}), **(overrides or {}).get("method", {})}
    cfg = apply_overrides(cfg, {k: v for k, v in (overrides or {}).items() if k != "method"})
    if cfg.optim.state == "network" and cfg.optim.lr_adv_scale != 1 and any(p.lr == "adv" for p in cls.phases):
        raise ConfigError(f"optim.lr_adv_scale={cfg.optim.lr_adv_scale} needs optim.state=phase: with one Adam per "
                          f"network, {method}'s phases share one learning rate per network (the loss weights set "
                          "their balance there); add optim.lr_adv_scale=1 to use optim.state=network")
    if (overrides or {}).get("method") and not dataclasses.fields(cls.Params):
        # --set applies to every listed method; method parameters belong to one of them
        keys = ",".join(f"method.{k}=..." for k in overrides["method"])
        raise ConfigError(f"method {method} has no method.* parameters; set them for one method with "
                          f"--methods 'NAME[{keys}]' (see `python -m bench list methods`)")
    resolved = cls.resolve_params(params)
    precision = resolve_precision(cfg.train.precision, device or resolve_device("auto"))
    return dataclasses.replace(cfg, params=cls.params_dict(resolved),
                               train=dataclasses.replace(cfg.train, precision=precision))
