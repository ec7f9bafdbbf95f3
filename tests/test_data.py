"""Every dataset loader on small generated folders, on ../shared/data when present, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.config import DataConfig
from bench.core.data import DATASETS, DatasetError, load_dataset


def write_images(folder: Path, n: int, size: tuple[int, int], ext: str = "png", start: int = 0, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(start, start + n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        name = f"{i:06d}.{ext}"
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def test_mnist5k_embedded(tmp_cache):
    d = load_dataset("mnist5k")
    assert (len(d.train), len(d.test)) == (4500, 500)
    assert d.train.shape[1:] == (1, 32, 32) and d.train.dtype == torch.uint8
    assert d.train[:, :, :2].max() == 0  # padding rows
    assert d.train_labels is not None and set(d.test_labels.tolist()) == set(range(10))


def test_cifar10_class_folders(tmp_path, tmp_cache):
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            write_images(tmp_path / "cifar10" / split / c, n, (32, 32), "jpg")
    d = load_dataset("cifar10", tmp_path)
    assert (len(d.train), len(d.test), d.resolution, d.channels) == (6, 4, 32, 3)
    assert d.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(d.test_labels.tolist()) == [0, 0, 1, 1]
    again = load_dataset("cifar10", tmp_path)  # from the cache
    assert torch.equal(again.train, d.train)
    assert list((tmp_cache / "datasets").glob("cifar10-32-*.pt"))


def test_celeba_crop_resize_and_splits(tmp_path, tmp_cache):
    names = write_images(tmp_path / "img_align_celeba", 12, (178, 218), "jpg")
    part = [0] * 8 + [1] * 2 + [2] * 2
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, part)))
    d = load_dataset("celeba", tmp_path)
    assert (len(d.train), len(d.test)) == (10, 2) and d.train.shape[1:] == (3, 32, 32)
    off = load_dataset("celeba", tmp_path, DataConfig(split="official"))
    assert (len(off.train), len(off.test)) == (8, 2)
    with pytest.raises(DatasetError, match="'default' or 'official'"):
        load_dataset("celeba", tmp_path, DataConfig(split="weird"))


def test_imagenet64_tiny_layout(tmp_path, tmp_cache):
    root = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01", "n02"):
        write_images(root / "train" / wnid / "images", 2, (64, 64), "JPEG")
    write_images(root / "val" / "images", 3, (64, 64), "JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{i:06d}.JPEG\t{w}\t0\t0\t1\t1\n" for i, w in enumerate(["n02", "n01", "n02"])))
    d = load_dataset("imagenet64", tmp_path)
    assert d.train.shape == (4, 3, 64, 64) and d.test.shape == (3, 3, 64, 64)
    assert sorted(d.test_labels.tolist()) == [0, 1, 1]


@pytest.mark.parametrize("layout", ["flat", "classes"])
def test_folder(tmp_path, tmp_cache, layout):
    if layout == "flat":
        write_images(tmp_path, 12, (50, 40))
    else:
        write_images(tmp_path / "a", 6, (50, 40))
        write_images(tmp_path / "b", 6, (50, 40), start=6)
    d = load_dataset("folder", tmp_path, DataConfig(resolution=64))
    assert (len(d.train), len(d.test)) == (10, 2) and d.train.shape[1:] == (3, 64, 64)


@pytest.mark.parametrize("name", [n for n in DATASETS if DATASETS.get(n).needs_root])
def test_missing_data_names_layout(tmp_path, tmp_cache, name):
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert "Expected layout" in msg and "--data-root" in msg and "AEGAN_BENCH_DATA" in msg


def test_max_train_subsamples(tmp_cache):
    d = load_dataset("mnist5k", cfg=DataConfig(max_train=100))
    assert len(d.train) == 100 and len(d.train_labels) == 100


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name,train,test,res", [
    ("cifar10", 50000, 10000, 32), ("celeba", 5000, 1000, 32), ("imagenet64", 20000, 10000, 64)])
def test_real_archives(shared_data, name, train, test, res):
    d = load_dataset(name, shared_data)  # the persistent cache makes reruns fast
    assert (len(d.train), len(d.test), d.resolution, d.channels) == (train, test, res, 3)
    mean = d.train[:5000].float().mean().item() / 255
    assert 0.3 < mean < 0.6
    if name == "cifar10":
        # per-class counts of the official split, and a class-balanced start of the (shuffled) test split
        assert torch.bincount(d.test_labels).tolist() == [1000] * 10
        assert torch.bincount(d.test_labels[:500], minlength=10).min() >= 30


def test_replacing_images_under_the_same_path_decodes_again(tmp_path, tmp_cache):
    """The decode cache is keyed by the folder's content listing, and the split digests name the decoded images."""
    folder = tmp_path / "imgs"
    write_images(folder, 6, (32, 32), seed=0)
    first = load_dataset("folder", folder)
    assert len(first.train) + len(first.test) == 6 and first.test_sha256 and first.train_sha256
    again = load_dataset("folder", folder)  # from the cache: same digests
    assert (again.train_sha256, again.test_sha256) == (first.train_sha256, first.test_sha256)
    for p in folder.iterdir():
        p.unlink()
    write_images(folder, 30, (32, 32), seed=1)  # other images, same path
    second = load_dataset("folder", folder)
    assert (len(second.train), len(second.test)) == (25, 5)
    assert second.test_sha256 != first.test_sha256 and second.source_sha256 != first.source_sha256
    write_images(folder, 1, (32, 32), seed=2)  # one file rewritten in place (same name, other pixels)
    third = load_dataset("folder", folder)
    assert third.train_sha256 != second.train_sha256 or third.test_sha256 != second.test_sha256


def test_run_data_is_recorded_and_checked(tmp_path, tmp_cache):
    from bench.core.data import SplitMismatchError, check_run_data

    d = load_dataset("mnist5k", cfg=DataConfig(max_train=100))
    check_run_data(tmp_path, d)  # first use records
    check_run_data(tmp_path, d)  # the same data passes
    other = load_dataset("mnist5k", cfg=DataConfig(max_train=200))
    with pytest.raises(SplitMismatchError, match=f"{d.train_sha256[:16]} recorded, {other.train_sha256[:16]} now"):
        check_run_data(tmp_path, other)
