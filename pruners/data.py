"""Workloads: labelled images split into train and held-out test, ready for timm models.

The embedded default is scikit-learn's handwritten digits (1,797 real labelled 8x8 scans), upsampled to
32x32 RGB with a fixed seeded, stratified 80/20 split, so the bench runs offline on real labels.
:func:`image_folder` reads your own labelled images (an ImageFolder with ``train/`` and ``val/``, or a
val-only folder such as ImageNet val) through timm's data stack, at the model's own resolution.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from timm.data import ImageDataset, create_transform, resolve_model_data_config
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

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
    """A labelled dataset for one bench run: ``train`` (augmented) for fine-tuning, ``test`` held out."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    img_size: int
    split: str = ""
    native: bool = False
    num_workers: int = 0

    def loader(self, split: str, batch_size: int, seed: int = 0) -> DataLoader:
        """Batches of ``split`` ("train" is shuffled with ``seed``, "test" is in order)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        train = split == "train"
        return DataLoader(
            self.train if train else self.test,
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
    train_idx = _first(train_idx, train_images, seed)
    test_idx = _first(test_idx, test_images, seed + 1)
    split += f"; {len(train_idx)} train / {len(test_idx)} held-out images"
    choices = {
        "files": fingerprint(root),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "train_images": train_images,
        "test_images": test_images,
        "hflip": hflip,
        "crop_scale": crop_scale,
        "seed": seed,
        "layout": "train/val" if train_dir is not None else "val-only",
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
        num_workers=min(4, os.cpu_count() or 1) if num_workers is None else num_workers,
    )
