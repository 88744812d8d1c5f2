"""Your own labelled images as a workload: an ImageFolder with ``train/`` and ``val/``, or a val-only folder
such as ImageNet val (half held out, half for training and recovery), read through timm's data stack
(``create_dataset``, ``resolve_model_data_config``, ``create_transform``) at the model's own resolution."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import ImageDataset, create_transform, resolve_model_data_config
from torch.utils.data import Subset

from .data import DataDirError, Workload
from .files import cache_dir, write_atomic
from .workloads import register_workload

# Sub-folders read as the held-out split, in order of preference (timm's and torchvision's names).
VAL_DIRS = ("val", "validation")


# With a val-only folder, this fraction of it is held out for scoring; the rest is used for recovery.
HELD_OUT_FRACTION = 0.5
# The seed of the held-out split and of the capped subsets: fixed, so a folder is one workload.
SPLIT_SEED = 0


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
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
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
    train_idx = _first(train_idx, train_images, SPLIT_SEED)
    test_idx = _first(test_idx, test_images, SPLIT_SEED + 1)
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
        "seed": SPLIT_SEED,
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
        num_workers=min(4, os.cpu_count() or 1),
        unreadable=skipped,
        classes=tuple(sorted(classes, key=classes.get)),
    )


@register_workload("folder:*", family="folder")
def _create_folder(name: str, model_name: str | None, options: Mapping[str, object]) -> Workload:
    """Your ImageFolder at ``folder:PATH``, read at ``model_name``'s data config: ``img_size``,
    ``train_images``, ``test_images``, ``hflip``, ``crop_scale``, ``skip_unreadable``."""
    if model_name is None:
        raise ValueError(f"workload {name!r} is read at a model's data config: name the model")
    return image_folder(
        name.removeprefix("folder:"),
        model_name,
        img_size=options.get("img_size"),
        train_images=options.get("train_images"),
        test_images=options.get("test_images"),
        hflip=options.get("hflip", 0.5),
        crop_scale=options.get("crop_scale"),
        skip_unreadable=bool(options.get("skip_unreadable")),
    )
