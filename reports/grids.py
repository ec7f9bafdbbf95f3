"""Figure grids from the trained checkpoints, as in the paper: reconstructions (figs 5-7), samples (fig 8),
latent morphing (section 4.4) and, on CelebA, side-view faces ("turns faces frontal").

Nothing is trained here: each method's model is rebuilt with methods.trained.build_method, loaded from its
run's last.pt (a refinement such as "faae+sc" from its base run's, through methods.trained.run_checkpoint,
the path the runner itself uses) and put in eval mode. Inputs are fixed: the first held-out images, a
fixed latent seed. A grid kind declares the capabilities it needs; methods without them are left out
with a note.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid

from bench.core.checkpoint import CheckpointError, load_checkpoint
from bench.core.config import RunConfig
from bench.core.data import ImageData
from bench.core.device import autocast
from bench.core.layout import RunDir
from bench.core.registry import Registry
from bench.core.tempfiles import atomic_write
from methods import METHODS
from methods.trained import load_trained, run_checkpoint

from .results import Run

#: held-out images per reconstruction grid, a seeded choice from the test split (test splits may be sorted
#: by class, so "the first 8" could all be one digit)
GRID_IMAGES = 8
#: seed of that choice; the same images for every method and every regeneration
HELD_OUT_SEED = 0
SAMPLES_PER_METHOD = 16
#: seed of the latent draws of every method's samples: the same z for all methods
SAMPLE_SEED = 8
MORPH_SIZE = 8
#: the morphing corners (top-left, top-right, bottom-left, bottom-right): the first 4 chosen test images
MORPH_CORNERS = 4
#: the side-view faces are picked among SIDE_VIEW_POOL chosen test images
SIDE_VIEW_POOL = 2000
PAD = 2
#: bump when the rendering changes, so that cached PNGs are re-rendered
GRID_VERSION = 1


class GridUnavailable(RuntimeError):
    """A method's grid cannot be drawn (no checkpoint, base run missing, unknown method); the message says why."""


class DamagedCheckpoint(GridUnavailable):
    """The run's checkpoint is damaged or not one of ours: the report lists it and draws the other runs."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        raise DamagedCheckpoint(str(e)) from None


# --- fixed inputs ---------------------------------------------------------------------------------------
def held_out_indices(n_test: int, n: int) -> torch.Tensor:
    """The first n of a fixed permutation of the test split (torch's seeded CPU randperm is reproducible)."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(HELD_OUT_SEED))[:n]


def held_out_images(test: torch.Tensor, n: int = GRID_IMAGES) -> torch.Tensor:
    return test[held_out_indices(len(test), n)]


def asymmetry_scores(images: torch.Tensor) -> torch.Tensor:
    """Mean |x - mirror(x)| of the grey-level image: frontal faces are near mirror-symmetric, faces turned
    to one side are not. A crude score: an asymmetric background or lighting also raises it."""
    grey = images.float().div(255).mean(1)
    return (grey - grey.flip(-1)).abs().flatten(1).mean(1)


def side_view_indices(test: torch.Tensor, n: int = GRID_IMAGES, pool: int = SIDE_VIEW_POOL) -> torch.Tensor:
    """The n most asymmetric of `pool` held-out test images, most asymmetric first (ties in pool order)."""
    candidates = held_out_indices(len(test), pool)
    order = torch.argsort(-asymmetry_scores(test[candidates]), stable=True)
    return candidates[order[:n]]


def bilinear_weights(size: int) -> torch.Tensor:
    """(size*size, 4) weights a_i of the corners (TL, TR, BL, BR) at each grid cell, row-major; rows sum to 1."""
    t = torch.linspace(0, 1, size, dtype=torch.float64)
    v, u = torch.meshgrid(t, t, indexing="ij")  # v down the rows, u along the columns
    w = torch.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], -1)
    return w.reshape(size * size, 4).float()


def morph_codes(corners: torch.Tensor, size: int, project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """l = sum_i a_i z_i over the grid, then z' = project(l) (normalize(l) for the sphere prior)."""
    return project(bilinear_weights(size) @ corners.float())


# --- grid kinds -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridKind:
    name: str
    title: str
    caption: str
    requires: frozenset[str]
    #: the held-out images the grid uses (uint8), or None when it needs no data
    select: Callable[[torch.Tensor], torch.Tensor] | None
    #: (model in eval mode, selected images as floats in [0, 1]) -> images of the method's block
    draw: Callable[[Any, torch.Tensor | None], torch.Tensor]
    #: label of a first block with the real images (None: no such block)
    real_label: str | None = None
    #: datasets the grid is drawn for (None: all)
    datasets: tuple[str, ...] | None = None
    ncol: int = GRID_IMAGES


GRIDS: Registry[GridKind] = Registry("grid")


def _reconstruct(model, x):
    return model.decode(model.encode(x))


def _samples(model, _x):
    return model.sample(SAMPLES_PER_METHOD, torch.Generator().manual_seed(SAMPLE_SEED))


def _morph(model, x):
    z = model.encode(x).float()
    return model.decode(morph_codes(z, MORPH_SIZE, model.prior.project))


for _kind in (
    GridKind("recon", "Reconstructions",
             f"{GRID_IMAGES} held-out test images (top row; a fixed choice, seed {HELD_OUT_SEED}) and each method's "
             "reconstruction G(E(x)).", frozenset({"encode", "decode"}), held_out_images, _reconstruct, "real"),
    GridKind("samples", "Random samples",
             f"{SAMPLES_PER_METHOD} samples G(z) per method; the same prior draws z (seed {SAMPLE_SEED}) for every "
             "method.", frozenset({"sample"}), None, _samples),
    GridKind("morph", "Latent morphing",
             f"The first {MORPH_CORNERS} held-out images of the reconstruction grid (first row) are encoded to "
             f"z_1..z_4 at the corners (top-left, top-right, bottom-left, bottom-right) of a {MORPH_SIZE}x{MORPH_SIZE} "
             "grid; each cell shows G(z') with z' = project(sum_i a_i z_i), a_i the bilinear weights of the corners "
             "(normalize for the sphere prior).",
             frozenset({"encode", "decode"}), lambda test: held_out_images(test, MORPH_CORNERS), _morph, "corners"),
    GridKind("side-view", "Side-view faces",
             f"The {GRID_IMAGES} most asymmetric faces among {SIDE_VIEW_POOL} held-out images (score: mean "
             "|x - mirror(x)| of the grey image, a crude proxy for a turned head that also catches asymmetric "
             "lighting) and each method's reconstruction, for the claim that reconstructions turn faces frontal.",
             frozenset({"encode", "decode"}), lambda test: test[side_view_indices(test)], _reconstruct, "real",
             datasets=("celeba",)),
):
    GRIDS.add(_kind.name, _kind)


# --- composing ------------------------------------------------------------------------------------------
def compose(blocks: list[tuple[str, torch.Tensor]], ncol: int, pad: int = PAD) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Stack labelled blocks of N x C x H x W images in [0, 1] (C = 1 or 3) into one uint8 3 x H' x W' grid,
    each block starting on a new row of `ncol` cells; returns it with (label, centre row in pixels)."""
    side = blocks[0][1].shape[-1]
    cells, labels, row = [], [], 0
    for label, imgs in blocks:
        imgs = imgs.detach().float().cpu().clamp(0, 1)
        if imgs.shape[1] == 1:
            imgs = imgs.expand(-1, 3, -1, -1)
        rows = -(-len(imgs) // ncol)
        blank = torch.ones(rows * ncol - len(imgs), 3, side, side)
        cells += [imgs, blank]
        labels.append((label, pad + (row * (side + pad)) + (rows * (side + pad) - pad) // 2))
        row += rows
    grid = make_grid(torch.cat(cells), nrow=ncol, padding=pad, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8), labels


def render_png(grid: torch.Tensor, labels: list[tuple[str, int]], path: Path, scale: int = 1) -> None:
    """Write the grid with its row labels on the left (PIL, no timestamps in the file)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    font = ImageFont.load_default(size=14)
    probe = ImageDraw.Draw(img)
    margin = 12 + max((int(probe.textlength(t, font=font)) for t, _ in labels), default=0)
    out = Image.new("RGB", (img.width + margin, img.height), "white")
    out.paste(img, (margin, 0))
    draw = ImageDraw.Draw(out)
    for text, y in labels:
        draw.text((margin - 6, y * scale), text, fill="black", font=font, anchor="rm")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: out.save(tmp, format="PNG"))


def display_scale(resolution: int) -> int:
    """Small images are enlarged (nearest neighbour) so the grid stays legible: 32 px -> x2, 64 px -> x1."""
    return max(1, 64 // resolution)


# --- models ---------------------------------------------------------------------------------------------
def checkpoint_of(run: Run) -> Path:
    """The checkpoint a run's model is loaded from: its own, or its base run's for a refinement method (looked up
    in the same <out>, since the run directory is <out>/runs/<run id>)."""
    if run.method not in METHODS:
        raise GridUnavailable(f"method {run.method!r} is not registered here (a plugin not loaded?)")
    return run_checkpoint(RunConfig.from_dict(run.config), RunDir(run.run_dir).out.path)


def checkpoint_stamp(run: Run) -> list[Any]:
    """What identifies the weights for caching: run id, checkpoint path, mtime and size."""
    try:
        path = checkpoint_of(run)
        st = path.stat()
        return [run.run_id, str(path), st.st_mtime_ns, st.st_size]
    except (GridUnavailable, OSError) as e:
        return [run.run_id, "unavailable", str(e)]


def shape_only(run: Run):
    """An empty dataset of the shape the run's nets were built for, read from its checkpoint: enough for
    grids that need no held-out images (samples) when the dataset itself is not at hand."""
    path = checkpoint_of(run)
    spec = read_checkpoint(path).get("spec") if path.exists() else None
    if spec is None:
        raise GridUnavailable(f"{path} does not record the data shape (written before checkpoints did)")
    empty = torch.empty(0, spec["channels"], spec["resolution"], spec["resolution"], dtype=torch.uint8)
    return ImageData(run.dataset, empty, empty)


def load_model(run: Run, data) -> Any:
    """The run's trained method, on the CPU, in eval mode. `data` gives channels and resolution."""
    path = checkpoint_of(run)
    if not path.exists():
        raise GridUnavailable(f"no checkpoint at {path}")
    ckpt = read_checkpoint(path)
    if METHODS.get(run.method).base_method is not None and not ckpt.get("finished"):
        raise GridUnavailable(f"the base run's checkpoint {path} is not finished")
    try:
        return load_trained(RunConfig.from_dict(run.config), ckpt, path, data)
    except CheckpointError as e:
        raise DamagedCheckpoint(str(e)) from None


def model_autocast(run: Run):

    return autocast(torch.device("cpu"), run.config.get("train", {}).get("precision", "fp32"))


@dataclass
class GridFigure:
    kind: GridKind
    path: Path
    key: str
    #: methods left out, with the reason
    notes: list[str]


def plan_grids(rows: list[tuple[str, Run]], dataset: str) -> list[tuple[GridKind, list[tuple[str, Run]], list[str]]]:
    """For each grid kind that applies to the dataset: the (label, run) blocks it draws, and notes on the
    methods it leaves out."""
    plans = []
    for _, kind in GRIDS.items():
        if kind.datasets is not None and dataset not in kind.datasets:
            continue
        chosen, notes = [], []
        for label, run in rows:
            if run.method not in METHODS:
                notes.append(f"{label}: method {run.method!r} is not registered here")
                continue
            missing = sorted(kind.requires - set(METHODS.get(run.method).provides))
            if missing:
                notes.append(f"{label}: lacks {', '.join(missing)}")
            else:
                chosen.append((label, run))
        plans.append((kind, chosen, notes))
    return plans


def grid_key(kind: GridKind, blocks: list[tuple[str, Run]], data_cfg: dict[str, Any]) -> str:
    import hashlib

    ident = {"kind": kind.name, "version": GRID_VERSION, "data": data_cfg, "caption": kind.caption,
             "blocks": [[label, *checkpoint_stamp(run)] for label, run in blocks]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def draw_grid(kind: GridKind, blocks: list[tuple[str, Run]], data, path: Path,
              models: dict[str, Any], damaged: dict[str, str] | None = None) -> tuple[bool, list[str]]:
    """Render one grid kind to `path`: (whether any method was drawn, notes on the methods that could not be).
    `models` caches loaded models (or why they cannot be loaded) by run id across the grids of one table;
    `damaged` collects run id -> message of the runs whose checkpoint is damaged."""
    x = None
    rendered: list[tuple[str, torch.Tensor]] = []
    if kind.select is not None:
        x = kind.select(data.test).float().div(255)
        rendered.append((kind.real_label or "real", x))
    notes = []
    for label, run in blocks:
        if run.run_id not in models:
            try:
                models[run.run_id] = load_model(run, data)
            except GridUnavailable as e:
                models[run.run_id] = e
        model = models[run.run_id]
        if isinstance(model, GridUnavailable):
            notes.append(f"{label}: {model}")
            if isinstance(model, DamagedCheckpoint) and damaged is not None:
                damaged[run.run_id] = str(model)
            continue
        # the encoder search of latent-recovery methods needs autograd: it enables it itself
        with model_autocast(run):
            out = kind.draw(model, x)
        rendered.append((label, out.float()))
    if len(rendered) == (1 if kind.select is not None else 0):
        return False, notes
    grid, labels = compose(rendered, kind.ncol)
    render_png(grid, labels, path, display_scale(data.resolution))
    return True, notes
