"""Claims: statements a paper makes that the stored numbers can decide, checked on the runs of a report table.

A claim names two methods and the metric keys that decide it; each key is read in its own direction (lower or
higher is better, from the metric registry). Per key, the runs' seeds are compared with the regression tracker's
statistics (bench.core.stats.compare_values): Welch's t test with several seeds per side, a prediction interval
with one side of one seed, the 5% tolerance alone with one seed per side (and the verdict says so). A claim is
"supported" when every deciding key favours the claimed method beyond the tolerance (and significantly, where
there are seeds to test), "not supported" when one key contradicts it the same way, else "undecided".

The F-AAE paper's claims ship registered; more come from a TOML file (`bench report --claims FILE.toml`)::

    [faae-beats-ali]
    text = "F-AAE reconstructs held-out images better than ALI"
    source = "my notes"
    better = "faae"
    than = "ali"
    keys = ["recon_mse", "lpips"]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.core.config import ConfigError
from bench.core.registry import Registry
from bench.core.stats import DEFAULT_ALPHA, DEFAULT_TOLERANCE, IMPROVED, REGRESSED, compare_values
from metrics import direction

from .tables import OK, Table, format_cell

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUPPORTED, NOT_SUPPORTED, UNDECIDED = "supported", "not supported", "undecided"
PAPER = "F-AAE paper (Flipped-Adversarial AutoEncoders), section 1 and 3"


@dataclass(frozen=True)
class Claim:
    name: str
    text: str
    source: str
    #: the method (a row's variant label) claimed better, and the one it is compared with
    better: str
    than: str
    #: the metric keys that decide the claim, each read in its own direction
    keys: tuple[str, ...]


CLAIMS: Registry[Claim] = Registry("claim")
for _c in (
    Claim("faae-sharper-than-aae", "F-AAE's reconstructions are sharper than AAE's", PAPER, "faae", "aae",
          ("recon_sharpness_ratio", "fid_recon")),
    Claim("faae-closer-than-bigan", "F-AAE's reconstructions resemble the originals better than BiGAN's", PAPER,
          "faae", "bigan", ("recon_mse", "lpips")),
    Claim("faae-inverse-than-bigan", "F-AAE's G and E are closer to inverses of each other than BiGAN's", PAPER,
          "faae", "bigan", ("reencode_ratio", "cycle_mse")),
    Claim("faae-samples-sharper-than-aae", "F-AAE's generator produces sharper images than AAE's", PAPER, "faae",
          "aae", ("sample_sharpness_ratio", "fid_samples")),
):
    CLAIMS.add(_c.name, _c)

CLAIM_FIELDS = ("text", "source", "better", "than", "keys")


def load_claims(path: str | Path) -> list[Claim]:
    """Claims from a TOML file, one table per claim (see the module docstring); every field is checked."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read claims file {path}: {e}") from None
    out = []
    for name, d in doc.items():
        missing = [f for f in CLAIM_FIELDS if f not in d] if isinstance(d, dict) else list(CLAIM_FIELDS)
        extra = sorted(set(d) - set(CLAIM_FIELDS)) if isinstance(d, dict) else []
        if missing or extra or not isinstance(d.get("keys"), list) or not d["keys"]:
            raise ConfigError(f"claim [{name}] in {path} needs the fields {', '.join(CLAIM_FIELDS)} (keys: a non-empty "
                              f"list of metric keys); missing {missing or 'none'}, unknown {extra or 'none'}")
        out.append(Claim(name, str(d["text"]), str(d["source"]), str(d["better"]), str(d["than"]),
                         tuple(str(k) for k in d["keys"])))
    return out


@dataclass(frozen=True)
class KeyEvidence:
    key: str
    better: str  # the claimed method's cell, as printed
    than: str
    verdict: str  # SUPPORTED / NOT_SUPPORTED / UNDECIDED for this key
    basis: str  # how the two were compared (test and p-value, or why there is none)
    change: str = ""  # the claimed method's relative difference, e.g. "-25.9%"


@dataclass(frozen=True)
class Checked:
    claim: Claim
    verdict: str
    evidence: tuple[KeyEvidence, ...]


def check(claim: Claim, table: Table, values: dict) -> Checked | None:
    """The claim's verdict on a table's runs; None when the table lacks either method or every deciding key."""
    rows = {row.variant: row for row in table.rows}
    a, b = rows.get(claim.better), rows.get(claim.than)
    keys = [k for k in claim.keys if k in table.keys]
    if a is None or b is None or not keys:
        return None
    evidence = []
    for k in keys:
        if a.cells[k].status != OK or b.cells[k].status != OK:
            evidence.append(KeyEvidence(k, format_cell(a.cells[k]), format_cell(b.cells[k]), UNDECIDED, "n/a"))
            continue
        per_seed = [[values[r.run_id][k].value for r in row.runs if k in values[r.run_id]
                     and values[r.run_id][k].value is not None] for row in (b, a)]
        s = compare_values(per_seed[0], per_seed[1], direction(k), DEFAULT_TOLERANCE, DEFAULT_ALPHA)
        verdict = {IMPROVED: SUPPORTED, REGRESSED: NOT_SUPPORTED}.get(s.verdict, UNDECIDED)
        basis = s.note if s.p_value is None else f"{s.note}, p={s.p_value:.2g}"
        evidence.append(KeyEvidence(k, format_cell(a.cells[k]), format_cell(b.cells[k]), verdict, basis,
                                    f"{s.rel:+.1%}"))
    verdicts = {e.verdict for e in evidence}
    overall = (SUPPORTED if verdicts == {SUPPORTED} else NOT_SUPPORTED if NOT_SUPPORTED in verdicts
               and SUPPORTED not in verdicts else UNDECIDED)
    return Checked(claim, overall, tuple(evidence))


def check_all(table: Table, values: dict, extra: list[Claim] | None = None) -> list[Checked]:
    out = []
    for claim in [*(CLAIMS.get(n) for n in CLAIMS), *(extra or [])]:
        c = check(claim, table, values)
        if c is not None:
            out.append(c)
    return out


def describe(c: Checked) -> str:
    """One line: verdict, the claim, per key the two cells, and the basis of the comparisons (said once when
    every key shares it, as with one seed per side)."""
    shared = len({e.basis for e in c.evidence}) == 1
    parts = "; ".join(f"{e.key}: {c.claim.better} {e.better} vs {c.claim.than} {e.than}"
                      + (f" ({', '.join(x for x in (e.change, '' if shared else e.basis) if x)})"
                         if e.change or not shared else "")
                      for e in c.evidence)
    tail = f"; {c.evidence[0].basis}" if shared and c.evidence else ""
    return f"{c.verdict.upper()}: {c.claim.text} [{c.claim.source}]. {parts}{tail}."
