"""The search space of `bench tune`: per method, config keys ("section.key", as --set takes them) with their ranges,
from a TOML file; DEFAULT_SPACE is the one shipped.

    [faae]
    "optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}       # a float range (log scale)
    "optim.beta1" = {choices = [0.0, 0.5, 0.9]}                 # a categorical choice
    "loss.rec_weight" = {low = 1.0, high = 1000.0, log = true, when = {"optim.state" = "network"}}

`low` and `high` both integers make an integer range (`step` optional). `when` keeps an entry only where the
resolved config holds those values: a loss weight acts only with one Adam per network, the adversarial phase's
rate only with one per phase (docs/methods.md), so each protocol searches what acts under it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.config import RunConfig, parse_overrides
from bench.core.errors import UsageError
from bench.core.toml_file import read_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: the shipped space. Every method gets its rates and beta1; the methods with a reconstruction or re-encoding phase
#: beside an adversarial one also get the balance between them (loss weights, or the adversarial phase's rate);
#: ALI its dropout. Ranges span the values the methods' authors and the protocols use (docs/methods.md).
DEFAULT_SPACE = """
[faae]
"optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}
"optim.lr_d" = {low = 3e-5, high = 3e-3, log = true}
"optim.beta1" = {choices = [0.0, 0.5, 0.9]}
"optim.lr_adv_scale" = {low = 0.1, high = 1.0, log = true, when = {"optim.state" = "phase"}}
"loss.rec_weight" = {low = 1.0, high = 1000.0, log = true, when = {"optim.state" = "network"}}
"loss.adv_weight" = {low = 0.01, high = 1.0, log = true, when = {"optim.state" = "network"}}

[aae]
"optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}
"optim.lr_d" = {low = 3e-5, high = 3e-3, log = true}
"optim.beta1" = {choices = [0.0, 0.5, 0.9]}
"optim.lr_adv_scale" = {low = 0.1, high = 1.0, log = true, when = {"optim.state" = "phase"}}
"loss.rec_weight" = {low = 1.0, high = 1000.0, log = true, when = {"optim.state" = "network"}}
"loss.adv_weight" = {low = 0.01, high = 1.0, log = true, when = {"optim.state" = "network"}}

[bigan]
"optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}
"optim.lr_d" = {low = 3e-5, high = 3e-3, log = true}
"optim.beta1" = {choices = [0.0, 0.5, 0.9]}

[ali]
"optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}
"optim.lr_d" = {low = 3e-5, high = 3e-3, log = true}
"optim.beta1" = {choices = [0.0, 0.5, 0.9]}
"method.dropout" = {low = 0.0, high = 0.5}

[latent-recovery]
"optim.lr_g" = {low = 3e-5, high = 1e-3, log = true}
"optim.lr_d" = {low = 3e-5, high = 3e-3, log = true}
"optim.beta1" = {choices = [0.0, 0.5, 0.9]}
"""

#: what an entry may hold
ENTRY_KEYS = ("low", "high", "log", "step", "choices", "when")


@dataclass(frozen=True)
class Param:
    """One searched config value."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    #: config key -> value the resolved config must hold for the entry to apply
    when: dict[str, Any] = field(default_factory=dict)

    def applies(self, flat: dict[str, Any]) -> bool:
        return all(flat.get(k) == v for k, v in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """The trial's value (an optuna.Trial), under the key as the parameter's name."""
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.key, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def holds(self, value: Any) -> bool:
        """Whether the value lies in the entry's range or among its choices (a value the search could draw)."""
        if self.choices:
            return value in self.choices
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high

    def first(self) -> Any:
        return self.choices[0] if self.choices else self.low

    def describe(self) -> dict[str, Any]:
        """The entry as the TOML file gives it (unset fields left out)."""
        d = {"low": self.low, "high": self.high, "log": self.log or None, "step": self.step,
             "choices": list(self.choices) or None, "when": self.when or None}
        return {k: v for k, v in d.items() if v is not None}


def _param(method: str, key: str, entry: Any, where: str) -> Param:
    at = f"{where}: [{method}] {key!r}"
    if not isinstance(entry, dict):
        raise UsageError(f"{at} must be a table such as {{low = 1e-4, high = 1e-3, log = true}} or {{choices = [...]}}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise UsageError(f"{at}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(ENTRY_KEYS)}")
    try:
        section = next(iter(parse_overrides([f"{key}=0"])))
    except ValueError as e:
        raise UsageError(f"{at}: {e}") from None
    if section == "data":  # the validation split is carved from the data the base config names
        raise UsageError(f"{at}: data.* cannot be searched (the validation split depends on it)")
    choices = tuple(entry.get("choices", ()))
    ranged = "low" in entry and "high" in entry
    if bool(choices) == ranged:
        raise UsageError(f"{at} needs either low and high, or a non-empty choices list")
    if ranged and not entry["low"] < entry["high"]:
        raise UsageError(f"{at}: low must be below high")
    when = entry.get("when", {})
    if not isinstance(when, dict):
        raise UsageError(f"{at}: when must be a table of \"section.key\" = value")
    return Param(key, entry.get("low"), entry.get("high"), bool(entry.get("log", False)), entry.get("step"),
                 choices, dict(when))


def load_space(path: str | Path | None = None) -> dict[str, list[Param]]:
    """method -> its searched values, from a TOML file (None: DEFAULT_SPACE)."""
    where = str(path) if path else "the default search space"
    raw = read_toml(path, "search space") if path else tomllib.loads(DEFAULT_SPACE)
    space = {}
    for method, table in raw.items():
        if not isinstance(table, dict) or not table:
            raise UsageError(f"{where}: [{method}] must be a non-empty table of \"section.key\" = {{...}}")
        space[method] = [_param(method, key, entry, where) for key, entry in table.items()]
    return space


def flatten(cfg: RunConfig) -> dict[str, Any]:
    """"section.key" -> value of a resolved config; the method's parameters as "method.key"."""
    d = cfg.to_dict()
    flat = {f"{s}.{k}": v for s, values in d.items() if isinstance(values, dict) and s != "params"
            for k, v in values.items()}
    flat.update({f"method.{k}": v for k, v in cfg.params.items()})
    return flat


def active(params: list[Param], base: RunConfig) -> list[Param]:
    """The entries that apply under a method's base config (their `when` holds)."""
    flat = flatten(base)
    return [p for p in params if p.applies(flat)]


def as_sections(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"optim.lr_g": 1e-4} -> {"optim": {"lr_g": 1e-4}}, the form of --set overrides."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def space_digest(params: list[Param]) -> str:
    """Names a space: a study continues only over the space it was started with."""
    text = json.dumps([[p.key, p.describe()] for p in params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
