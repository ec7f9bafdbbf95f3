"""`bench score --metric NAME A B`: score images outside any run.

Distribution metrics (fid, kid) compare two folders of images. Pairwise metrics (lpips, mse, and psnr/ssim when
metrics.image_quality provides them) compare two image files, or two folders image by image, matching files by
their path relative to the folder. Images are read as torch-fidelity reads folders (PIL, RGB), so FID and KID
equal `fidelity --fid --kid A B` with the same weights by default (--dtype bf16 is an approximate, faster mode).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cli import command
from ..core import strict_json
from ..core.data import IMAGE_EXTS, list_images, pil_to_uint8
from ..core.errors import UsageError
from ..core.registry import Registry


@dataclass(frozen=True)
class Scorer:
    name: str
    #: "distribution": two folders, one number; "pairwise": per image pair, averaged
    kind: str
    direction: str
    description: str
    #: distribution: (uint8 A, uint8 B, args) -> (value, provenance); pairwise: (A, B in [0,1], args) -> per pair
    score: Callable[..., Any]


SCORERS: Registry[Scorer] = Registry("metric")


def _fidelity(key: str):
    def score(a: torch.Tensor, b: torch.Tensor, args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
        from metrics.fidelity import fid_kid, kid_provenance, provenance
        from metrics.weights import inception_weights

        from ..core.device import resolve_device, resolve_precision

        device = resolve_device(args.device)
        resolve_precision(args.dtype, device)  # warns where bf16 would be emulated
        w = inception_weights(args.weights_cache)
        s = fid_kid(a, b, weights=w, mode=args.dtype, device=device, fid=key == "fid", kid=key == "kid")
        prov = provenance(w, args.dtype, device, len(a), len(b))
        if key == "kid":
            prov.update(kid_provenance(a, b), kid_std=s["kid_std"])
        return s[key], prov

    return score


def _lpips(a: torch.Tensor, b: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    from metrics.lpips_metric import lpips_distance

    from ..core.device import resolve_device

    return lpips_distance(a, b, net=args.net, device=resolve_device(args.device), cache_dir=args.weights_cache)


def _lpips_provenance(args: argparse.Namespace) -> dict[str, Any]:
    from metrics.lpips_metric import lpips_model, lpips_version

    _, w = lpips_model(args.net, "cpu", args.weights_cache)
    return {"lpips": lpips_version(), "net": args.net, **w.provenance(), "input_range": "[-1,1]"}


SCORERS.add("fid", Scorer("fid", "distribution", "lower", "Frechet Inception Distance (torch-fidelity)",
                          _fidelity("fid")))
SCORERS.add("kid", Scorer("kid", "distribution", "lower", "Kernel Inception Distance, mean over subsets",
                          _fidelity("kid")))
SCORERS.add("lpips", Scorer("lpips", "pairwise", "lower", "LPIPS (alex, or --net vgg)", _lpips))


def _pairwise(module: str, func: str) -> Callable[..., torch.Tensor]:
    """A pairwise `func(a, b) -> per-image tensor` of a metrics module, imported when used (the CLI starts fast;
    psnr/ssim come from metrics.image_quality, which an installation may lack)."""

    def score(a: torch.Tensor, b: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError):
            raise UsageError(f"this installation has no {module}.{func}") from None
        return fn(a, b)

    return score


SCORERS.add("mse", Scorer("mse", "pairwise", "lower", "mean squared error, pixels in [0,1]",
                          _pairwise("metrics.reconstruction", "per_image_mse")))
SCORERS.add("psnr", Scorer("psnr", "pairwise", "higher", "PSNR in dB (scikit-image, data range 1)",
                           _pairwise("metrics.image_quality", "psnr")))
SCORERS.add("ssim", Scorer("ssim", "pairwise", "higher", "SSIM, Wang et al. settings (scikit-image)",
                           _pairwise("metrics.image_quality", "ssim")))


# --- reading images ---------------------------------------------------------------------------------------
def read_image(path: Path, rgb: bool) -> torch.Tensor:
    """uint8 C x H x W as torch-fidelity reads it (PIL, RGB); grey images keep one channel unless rgb; 16-bit
    images are scaled to 8 bit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return pil_to_uint8(img, 3 if rgb else None)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from None


def stack(paths: list[Path], rgb: bool, where: str) -> torch.Tensor:
    images = [read_image(p, rgb) for p in paths]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise UsageError(f"images in {where} differ in size ({', '.join(map(str, sorted(shapes)[:3]))}); "
                         "resize them to one size first")
    return torch.stack(images)


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such file or folder: {path}")
    return p


def pairs(a: Path, b: Path) -> list[tuple[Path, Path]]:
    """Two files, or two folders matched by relative path."""
    if a.is_file() and b.is_file():
        return [(a, b)]
    if not (a.is_dir() and b.is_dir()):
        raise UsageError("a pairwise metric takes two image files or two folders, not a file and a folder")
    left = {p.relative_to(a): p for p in list_images(a)}
    right = {p.relative_to(b): p for p in list_images(b)}
    only = sorted(set(left) ^ set(right))
    if only:
        raise UsageError(f"{len(only)} images are in only one of the folders (matched by name), e.g. "
                         f"{', '.join(map(str, only[:3]))}")
    if not left:
        raise UsageError(f"no images ({', '.join(IMAGE_EXTS)}) in {a} and {b}")
    return [(left[k], right[k]) for k in sorted(left)]


def score_pairwise(scorer: Scorer, a: Path, b: Path, args: argparse.Namespace) -> dict[str, Any]:
    matched = pairs(a, b)
    values: list[float] = []
    for pa, pb in matched:  # one pair at a time: pairs may differ in size and channels
        x, y = read_image(pa, rgb=False), read_image(pb, rgb=False)
        if x.shape[0] != y.shape[0]:
            x, y = x.expand(3, -1, -1), y.expand(3, -1, -1)
        if x.shape != y.shape:
            raise UsageError(f"{pa} and {pb} differ in size: {tuple(x.shape)} vs {tuple(y.shape)}")
        values.append(float(scorer.score(x[None].float() / 255, y[None].float() / 255, args)[0]))
    result = {"value": sum(values) / len(values), "n": len(values),
              "per_image": {str(pa): v for (pa, _), v in zip(matched, values)}}
    if scorer.name == "lpips":
        result["provenance"] = _lpips_provenance(args)
    return result


def score_distribution(scorer: Scorer, a: Path, b: Path, args: argparse.Namespace) -> dict[str, Any]:
    for p in (a, b):
        if not p.is_dir():
            raise UsageError(f"{scorer.name} compares two folders of images; {p} is not a folder")
    sets = []
    for p in (a, b):
        files = list_images(p)
        if len(files) < 2:
            raise UsageError(f"{scorer.name} needs at least 2 images in each folder; {p} has {len(files)}")
        sets.append(stack(files, rgb=True, where=str(p)))
    value, prov = scorer.score(sets[0], sets[1], args)
    return {"value": value, "n": [len(sets[0]), len(sets[1])], "provenance": prov}


RUN_KIND: dict[str, Callable[[Scorer, Path, Path, argparse.Namespace], dict[str, Any]]] = {
    "pairwise": score_pairwise, "distribution": score_distribution}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", required=True, help=f"one of: {', '.join(SCORERS)}")
    p.add_argument("a", metavar="A", help="image folder (fid, kid) or image file / folder (pairwise metrics)")
    p.add_argument("b", metavar="B", help="the other folder or file")
    p.add_argument("--json", action="store_true", help="print one JSON object (value, n, provenance)")
    # valid values are checked against the metrics' registries when used (importing them here would slow
    # every `bench` command)
    p.add_argument("--net", default="alex", help="LPIPS backbone: alex (default) or vgg")
    p.add_argument("--dtype", default="fp32",
                   help="FID/KID features: fp32 (default: equals torch-fidelity's values) or bf16 (approximate, "
                        "faster where bf16 is fast; never comparable with fp32 values)")
    p.add_argument("--weights-cache", default=None, metavar="DIR",
                   help="folder of the pretrained weights (default $AEGAN_BENCH_WEIGHTS or <cache>/weights)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


@command("score", "score two image folders (fid, kid) or image pairs (lpips, mse, ...) outside any run", _args)
def run(args: argparse.Namespace) -> int:
    scorer = SCORERS.get(args.metric)
    from metrics.fidelity import FEATURES
    from metrics.lpips_metric import LPIPS_NETS

    FEATURES.get(args.dtype)  # unknown values: exit 2 with the valid ones
    if args.net not in LPIPS_NETS:
        raise UsageError(f"unknown --net {args.net!r}; valid: {', '.join(LPIPS_NETS)}")
    from ..core.device import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    a, b = _existing(args.a), _existing(args.b)
    try:
        result = RUN_KIND[scorer.kind](scorer, a, b, args)
    except ValueError as e:  # bad image ranges or sizes, torch-fidelity's input checks
        raise UsageError(f"{scorer.name}: {e}") from None
    out = {"metric": scorer.name, "direction": scorer.direction, "a": str(a), "b": str(b), **result}
    if args.json:
        print(strict_json.dumps(out, indent=1))
        return 0
    n = out["n"] if scorer.kind == "pairwise" else " vs ".join(map(str, out["n"]))
    print(f"{scorer.name} = {out['value']:.6g}  ({scorer.direction} is better; n = {n})")
    prov = out.get("provenance", {})
    if prov:
        shown = ("net", "dtype", "feature_mode", "weights_sha256", "weights_source")
        print("  " + ", ".join(f"{k}={prov[k]}" for k in shown if k in prov))
    return 0
