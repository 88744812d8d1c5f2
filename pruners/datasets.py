"""Datasets named the timm way (``torch/fashion_mnist``, ``torch/mnist``, ``torch/kmnist``, ``torch/cifar10``,
``torch/cifar100``) as workloads, from torchvision's files: Fashion-MNIST offline from Debian's
``dataset-fashion-mnist``, the others from a ``data_dir`` root or with ``dataset_download``."""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from timm.data import create_dataset
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .data import DEFAULT_IMG_SIZE, DataDirError, TensorImageDataset, Workload, channel_stats
from .files import cache_dir, write_atomic
from .folder import _first
from .models import model_img_size
from .workloads import register_workload


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
    img_size: int = DEFAULT_IMG_SIZE,
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
    mean, std = channel_stats(train_x[train_idx], scale=255)
    mean, std = mean * (3 // channels), std * (3 // channels)
    resize = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Resize((img_size, img_size), antialias=True)]
    )
    rgb, normalize = v2.Lambda(_three_channels), v2.Normalize(mean, std)
    augment = [
        v2.RandomCrop(img_size, padding=img_size // 16),
        *([v2.RandomHorizontalFlip()] if flips else []),
    ]
    train_tf, test_prepare = v2.Compose([*augment, rgb, normalize]), v2.Compose([resize, rgb, normalize])
    train = TensorImageDataset(train_x[train_idx], train_y[train_idx], train_tf, resize)
    recovery = TensorImageDataset(train_x[recovery_idx], train_y[recovery_idx], train_tf, resize)
    test = TensorImageDataset(test_x[test_idx], test_y[test_idx], None, test_prepare)
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
        classes=tuple(getattr(splits["train"], "classes", ())),
    )


def _three_channels(images: torch.Tensor) -> torch.Tensor:
    """``images`` (``C x H x W`` or ``N x C x H x W``, ``C`` 1 or 3) with three channels: grayscale
    repeated."""
    return images.expand(*images.shape[:-3], 3, *images.shape[-2:])


@register_workload("torch/*")
def _create_torch(name: str, model_name: str | None, options: Mapping[str, object]) -> Workload:
    """A torchvision dataset named the timm way (``torch/fashion_mnist``): ``root``, ``download``,
    ``img_size`` (default: ``model_name``'s size on this family, :func:`pruners.models.model_img_size`),
    ``train_images``, ``test_images``."""
    return torch_dataset(
        name,
        options.get("root"),
        download=bool(options.get("download")),
        img_size=options.get("img_size") or model_img_size(model_name, dataset_family(name)),
        train_images=options.get("train_images"),
        test_images=options.get("test_images"),
    )
