"""Workloads: labelled images split into train and held-out test, ready for timm models.

The embedded default is scikit-learn's handwritten digits (1,797 real labelled 8x8 scans), upsampled to
32x32 RGB with a fixed seeded, stratified 80/20 split, so the bench runs offline on real labels.
:func:`image_folder` reads your own labelled images (an ImageFolder with ``train/`` and ``val/``, or a
val-only folder such as ImageNet val) through timm's data stack, at the model's own resolution.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import ImageDataset, create_dataset, create_transform, resolve_model_data_config
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from .files import cache_dir, write_atomic

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorImageDataset(Dataset):
    """Images held in one tensor, with a per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


@dataclass(frozen=True)
class Workload:
    """A labelled dataset for one bench run: ``train`` (augmented) for the dense baselines, ``test`` held
    out. ``recovery`` is what pruning and recovery train on: the whole train split, or a seeded subset of
    it where a full epoch would not fit the bench's budget. ``family`` keys the baseline recipes
    (:mod:`pruners.models`)."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    img_size: int
    split: str = ""
    native: bool = False
    num_workers: int = 0
    family: str = "digits"
    recovery: Dataset | None = None
    unreadable: int = 0

    def loader(self, split: str, batch_size: int, seed: int = 0) -> DataLoader:
        """Batches of ``split``: "train" and "recovery" are shuffled with ``seed``, "test" is in order."""
        if split not in ("train", "recovery", "test"):
            raise ValueError(f"split must be 'train', 'recovery' or 'test', got {split!r}")
        train = split != "test"
        recovery = self.recovery if self.recovery is not None else self.train
        data = {"train": self.train, "recovery": recovery, "test": self.test}[split]
        if train and len(data) < batch_size:
            raise ValueError(
                f"the {split} split of {self.name} holds {len(data)} images, fewer than one batch of "
                f"{batch_size}"
            )
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            generator=torch.Generator().manual_seed(seed) if train else None,
            num_workers=self.num_workers,
        )

    def test_batch(self, batch_size: int) -> torch.Tensor:
        """The first ``batch_size`` held-out images, as one batch (for tracing, MACs and latency)."""
        if batch_size > len(self.test):
            raise ValueError(
                f"batch size {batch_size} exceeds the {len(self.test)} test images of {self.name}"
            )
        return torch.stack([self.test[i][0] for i in range(batch_size)])


def digits(img_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Workload:
    """scikit-learn's digits as a :class:`Workload`: ``img_size`` px RGB, stratified seeded split.

    Training images are shifted by up to 2 px at random (padding + crop); both splits are standardised
    with the training split's mean and std.
    """
    # scikit-learn takes a second to import; only this workload needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=test_fraction, random_state=seed, stratify=labels.numpy()
    )
    train_images = images[train_idx]
    normalize = v2.Normalize([train_images.mean().item()] * 3, [train_images.std().item()] * 3)
    shift = v2.Compose([v2.RandomCrop(img_size, padding=img_size // 16), normalize])
    return Workload(
        name=f"digits{img_size}-s{seed}",
        train=TensorImageDataset(train_images, labels[train_idx], shift),
        test=TensorImageDataset(images[test_idx], labels[test_idx], normalize),
        num_classes=10,
        img_size=img_size,
        split=f"embedded digits, seeded stratified split: {len(train_idx)} train / {len(test_idx)} held out",
    )


class DataDirError(ValueError):
    """A ``--data-dir`` that cannot be used: missing, empty, or laid out in a way the bench cannot read."""


# Sub-folders read as the held-out split, in order of preference (timm's and torchvision's names).
VAL_DIRS = ("val", "validation")
# With a val-only folder, this fraction of it is held out for scoring; the rest is used for recovery.
HELD_OUT_FRACTION = 0.5


def fingerprint(root: Path) -> str:
    """A hash of every file under ``root`` (relative path and size): a changed folder, a changed key."""
    digest = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def folder_layout(root: Path) -> tuple[Path | None, Path]:
    """``(train dir, val dir)`` of an ImageFolder root; ``(None, root)`` for a val-only folder of classes."""
    if not root.is_dir():
        raise DataDirError(f"data dir {root} does not exist or is not a directory")
    train = root / "train" if (root / "train").is_dir() else None
    val = next((root / name for name in VAL_DIRS if (root / name).is_dir()), None)
    if train is not None and val is None:
        raise DataDirError(f"data dir {root} has train/ but no val/ (or validation/) to score on")
    return train, val if val is not None else root


def _images(root: Path, transform: Callable, class_map: dict[str, int] | str = "") -> ImageDataset:
    try:
        return ImageDataset(str(root), class_map=class_map, transform=transform)
    except RuntimeError as err:
        if "Found 0 images" not in str(err):
            raise
        raise DataDirError(
            f"{root} holds no images in class sub-folders (ImageFolder layout: CLASS/IMAGE)"
        ) from None


# How many unreadable paths an error message names before "and N more".
SHOWN_PATHS = 3


def unreadable_images(dataset: ImageDataset, key: str) -> list[str]:
    """Paths of ``dataset``'s images that PIL cannot decode. timm's reader would silently serve the next
    sample in their place. Every image is decoded once; the list is cached under ``key`` (the folder's
    fingerprint), so a second run of the same folder does not decode it again."""
    path = cache_dir() / "scans" / f"{key}.json"
    if path.is_file():
        try:
            bad = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad = None
        if isinstance(bad, list) and all(isinstance(p, str) for p in bad):
            return bad
        warnings.warn(f"the image scan {path} is corrupt; scanning the folder again", stacklevel=2)
    bad = []
    for index in range(len(dataset.reader)):
        filename = dataset.reader.filename(index, absolute=True)
        try:
            with Image.open(filename) as image:
                image.load()
        except (OSError, SyntaxError, ValueError):
            bad.append(filename)
    text = json.dumps(bad).encode()
    write_atomic(path, lambda f: f.write(text))
    return bad


def _readable(dataset: ImageDataset, indices: list[int], bad: set[str], skip: bool, where: Path) -> list[int]:
    """``indices`` less the unreadable images; a :class:`DataDirError` naming them unless ``skip``."""
    found = [i for i in indices if dataset.reader.filename(i, absolute=True) in bad]
    if found and not skip:
        names = [dataset.reader.filename(i, absolute=True) for i in found[:SHOWN_PATHS]]
        more = f" and {len(found) - SHOWN_PATHS} more" if len(found) > SHOWN_PATHS else ""
        raise DataDirError(
            f"{len(found)} image(s) under {where} cannot be read: {', '.join(names)}{more}; fix or remove "
            "them, or pass `skip_bad_images` to leave them out"
        )
    left_out = set(found)
    return [i for i in indices if i not in left_out]


def _first(indices: list[int], count: int | None, seed: int) -> list[int]:
    """A seeded random ``count`` of ``indices`` (all of them when ``count`` is None or larger)."""
    if count is None or count >= len(indices):
        return indices
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    return sorted(indices[i] for i in order[:count].tolist())


def image_folder(
    root: str | os.PathLike,
    model_name: str,
    *,
    img_size: int | None = None,
    train_images: int | None = None,
    test_images: int | None = None,
    hflip: float = 0.5,
    crop_scale: float | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    skip_unreadable: bool = False,
) -> Workload:
    """Your labelled images as a :class:`Workload` for ``model_name``, read with timm's ``ImageDataset``
    and transformed with ``create_transform`` from the model's own data config (``resolve_model_data_config``:
    resolution, crop, interpolation, mean and std); ``img_size`` overrides the resolution.

    ``root`` holds ``train/`` and ``val/`` (or ``validation/``) with one sub-folder per class, or is a
    val-only folder of classes (ImageNet val): then a seeded random :data:`HELD_OUT_FRACTION` of it is held
    out for scoring and the rest used for training and recovery, never both. Training images get timm's
    augmentation: a random resized crop of at least ``crop_scale`` of the image (timm's 0.08 when
    ``None``), a horizontal flip with probability ``hflip`` and colour jitter. ``train_images`` and
    ``test_images`` cap each split at a seeded random subset. The workload's name, and so every cache key,
    carries a hash of the files (paths, sizes), the data config and these choices.

    Every image is decoded once up front: unreadable ones are a :class:`DataDirError` that counts and names
    them, or with ``skip_unreadable`` are left out and counted in :attr:`Workload.unreadable`.
    """
    root = Path(root).expanduser().resolve()
    train_dir, val_dir = folder_layout(root)
    with torch.device("meta"):
        config = resolve_model_data_config(timm.create_model(model_name, pretrained=False))
    if img_size is not None:
        config["input_size"] = (3, img_size, img_size)
    scale = None if crop_scale is None else (crop_scale, 1.0)
    train_tf = create_transform(**config, is_training=True, hflip=hflip, scale=scale)
    test_tf = create_transform(**config, is_training=False)
    if train_dir is not None:
        train = _images(train_dir, train_tf)
        classes = train.reader.class_to_idx
        extra = sorted({p.name for p in val_dir.iterdir() if p.is_dir()} - set(classes))
        if extra:
            raise DataDirError(f"{val_dir} has classes that {train_dir} lacks: {', '.join(extra[:5])}")
        test = _images(val_dir, test_tf, class_map=classes)
        train_idx, test_idx = list(range(len(train))), list(range(len(test)))
        split = f"train/ for training and recovery, {val_dir.name}/ held out"
    else:
        train, test = _images(val_dir, train_tf), _images(val_dir, test_tf)
        classes = train.reader.class_to_idx
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        cut = round(len(order) * (1 - HELD_OUT_FRACTION))
        train_idx, test_idx = sorted(order[:cut]), sorted(order[cut:])
        split = (
            f"val-only folder: a seeded random {100 * HELD_OUT_FRACTION:g} % held out, "
            "the rest for training and recovery"
        )
    files = fingerprint(root)
    bad = set(unreadable_images(train, f"{files}-{'train' if train_dir else 'all'}"))
    if train_dir is not None:
        bad |= set(unreadable_images(test, f"{files}-{val_dir.name}"))
    kept = len(train_idx) + len(test_idx)
    train_idx = _readable(train, train_idx, bad, skip_unreadable, root)
    test_idx = _readable(test, test_idx, bad, skip_unreadable, root)
    skipped = kept - len(train_idx) - len(test_idx)
    train_idx = _first(train_idx, train_images, seed)
    test_idx = _first(test_idx, test_images, seed + 1)
    split += f"; {len(train_idx)} train / {len(test_idx)} held-out images"
    if skipped:
        split += f" ({skipped} unreadable left out)"
    choices = {
        "files": files,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "train_images": train_images,
        "test_images": test_images,
        "hflip": hflip,
        "crop_scale": crop_scale,
        "seed": seed,
        "layout": "train/val" if train_dir is not None else "val-only",
        "skipped": skipped,
    }
    digest = hashlib.sha1(json.dumps(choices, sort_keys=True).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name) or "data"
    size = config["input_size"][-1]
    return Workload(
        name=f"{slug}{size}-{digest}",
        train=Subset(train, train_idx),
        test=Subset(test, test_idx),
        num_classes=len(classes),
        img_size=size,
        split=split,
        native=True,
        family="folder",
        num_workers=min(4, os.cpu_count() or 1) if num_workers is None else num_workers,
        unreadable=skipped,
    )


class DatasetUnavailableError(DataDirError):
    """A named dataset whose files are not on this machine and may not be downloaded."""


# timm's names of the torchvision datasets the bench reads (``timm.data.create_dataset("torch/...")``),
# with torchvision's folder name for each and whether a horizontal flip keeps an image's class.
TORCH_DATASETS: dict[str, tuple[str, bool]] = {
    "torch/fashion_mnist": ("FashionMNIST", True),
    "torch/mnist": ("MNIST", False),
    "torch/kmnist": ("KMNIST", False),
    "torch/cifar10": ("cifar-10-batches-py", True),
    "torch/cifar100": ("cifar-100-python", True),
}
# Where Debian's dataset-fashion-mnist package installs the four original gzip files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Pruning and recovery on a named dataset train on a seeded subset of this many training images: an
# epoch of Fashion-MNIST's 60,000 costs a resnet18 minutes on 2 cores.
RECOVERY_IMAGES = 8192


def dataset_family(name: str) -> str:
    """The :attr:`Workload.family` of the named dataset (``torch/fashion_mnist`` -> ``fashion_mnist``);
    a :class:`DataDirError` for a name not in :data:`TORCH_DATASETS`."""
    if name not in TORCH_DATASETS:
        raise DataDirError(f"unknown `dataset` {name!r}; choose from {', '.join(TORCH_DATASETS)}")
    return name.removeprefix("torch/")


def fashion_mnist_hint(where: str) -> str:
    """The one line that says how to get Fashion-MNIST onto this machine."""
    return (
        f"Fashion-MNIST is not in {where}: `apt-get install dataset-fashion-mnist` (Debian, offline "
        "mirrors included), or pass `dataset_download` with network access, or `data_dir` ROOT holding "
        "ROOT/FashionMNIST/raw/"
    )


def fashion_mnist_root(debian: Path | None = None) -> Path | None:
    """A torchvision root holding Fashion-MNIST, laid out in the project's cache from Debian's package
    (un-gzipped into ``CACHE/datasets/FashionMNIST/raw/``, written atomically, never into a system
    folder); ``None`` when neither the cache nor the package (``debian``, default
    :data:`DEBIAN_FASHION_MNIST`) has the files."""
    debian = DEBIAN_FASHION_MNIST if debian is None else debian
    root = cache_dir() / "datasets"
    raw = root / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in FASHION_MNIST_FILES):
        return root
    if not all((debian / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES):
        return None
    for name in FASHION_MNIST_FILES:
        if not (raw / name).is_file():
            with gzip.open(debian / f"{name}.gz", "rb") as packed:
                data = packed.read()
            write_atomic(raw / name, lambda f, data=data: f.write(data))
    return root


def _as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images N x C x H x W, int64 labels)`` of a torchvision MNIST- or CIFAR-style dataset."""
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)


def torch_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    img_size: int = 32,
    train_images: int | None = None,
    test_images: int | None = None,
    recovery_images: int | None = RECOVERY_IMAGES,
    seed: int = 0,
) -> Workload:
    """A torchvision dataset named the timm way (``torch/fashion_mnist``, ``torch/cifar10``, ...) as a
    :class:`Workload`, built through ``timm.data.create_dataset``: its train split for baselines, a seeded
    ``recovery_images`` subset of it for pruning and recovery, and its test split held out (all of it
    unless ``test_images`` caps it at a seeded subset; ``train_images`` caps the train split).

    Images are resized (bilinear) to ``img_size`` px, grayscale repeated to three channels, and
    standardised with the training split's mean and std per channel; training images are shifted by up to
    ``img_size // 16`` px at random (padding + crop) and, where a flip keeps the class (Fashion-MNIST,
    CIFAR), flipped horizontally with probability 0.5.

    Without ``root``, Fashion-MNIST comes from Debian's package (:func:`fashion_mnist_root`); other
    datasets need ``root`` or ``download``. Missing files are a :class:`DatasetUnavailableError`.
    """
    family = dataset_family(name)
    folder, flips = TORCH_DATASETS[name]
    if root is None and name == "torch/fashion_mnist" and not download:
        found = fashion_mnist_root()
        if found is None:
            raise DatasetUnavailableError(fashion_mnist_hint(f"{DEBIAN_FASHION_MNIST} or {cache_dir()}"))
        root = found
    if root is None:
        if not download:
            raise DatasetUnavailableError(
                f"{name} needs `data_dir` ROOT (torchvision's layout, ROOT/{folder}/) or `dataset_download`"
            )
        root = cache_dir() / "datasets"
    root = Path(root).expanduser()
    try:
        splits = {
            split: create_dataset(name, root=str(root), split=split, download=download)
            for split in ("train", "validation")
        }
    except RuntimeError as err:
        if name == "torch/fashion_mnist":
            raise DatasetUnavailableError(fashion_mnist_hint(str(root))) from None
        raise DatasetUnavailableError(
            f"{name} is not in {root} ({str(err).strip()}): pass `data_dir` ROOT holding ROOT/{folder}/, "
            "or `dataset_download` with network access"
        ) from None
    train_x, train_y = _as_tensors(splits["train"])
    test_x, test_y = _as_tensors(splits["validation"])
    train_idx = _first(list(range(len(train_y))), train_images, seed)
    test_idx = _first(list(range(len(test_y))), test_images, seed + 1)
    recovery_idx = _first(train_idx, recovery_images, seed + 2)
    channels = train_x.shape[1]
    scaled = train_x[train_idx].float() / 255
    mean = scaled.mean(dim=(0, 2, 3)).tolist() * (3 // channels)
    std = scaled.std(dim=(0, 2, 3)).tolist() * (3 // channels)
    base = [
        v2.ToDtype(torch.float32, scale=True),
        v2.Resize((img_size, img_size), antialias=True),
        v2.Lambda(lambda x: x.expand(3, -1, -1)),
    ]
    normalize = v2.Normalize(mean, std)
    augment = [
        v2.RandomCrop(img_size, padding=img_size // 16),
        *([v2.RandomHorizontalFlip()] if flips else []),
    ]
    train_tf, test_tf = v2.Compose([*base, *augment, normalize]), v2.Compose([*base, normalize])
    train = TensorImageDataset(train_x[train_idx], train_y[train_idx], train_tf)
    recovery = TensorImageDataset(train_x[recovery_idx], train_y[recovery_idx], train_tf)
    test = TensorImageDataset(test_x[test_idx], test_y[test_idx], test_tf)
    caps = "-".join(f"{k}{c}" for k, c in (("tr", train_images), ("te", test_images)) if c is not None)
    return Workload(
        name=f"{family}{img_size}-s{seed}" + (f"-{caps}" if caps else ""),
        train=train,
        test=test,
        num_classes=int(train_y.max()) + 1,
        img_size=img_size,
        split=(
            f"{name} (timm create_dataset): {len(train)} train images for the baselines, a seeded "
            f"{len(recovery)} of them for pruning and recovery, {len(test)} test images held out; "
            f"{img_size} px, {'3' if channels == 3 else 'grayscale repeated to 3'} channels"
        ),
        family=family,
        recovery=recovery,
    )
