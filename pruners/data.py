"""Workloads: labelled images split into train and held-out test, ready for timm models.

The embedded default is scikit-learn's handwritten digits (1,797 real labelled 8x8 scans), upsampled to
32x32 RGB with a fixed seeded, stratified 80/20 split, so the bench runs offline on real labels.
:func:`pruners.folder.image_folder` reads your own labelled images and :mod:`pruners.datasets` the datasets
named the timm way; :func:`pruners.workloads.create_workload` names all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .workloads import register_workload

Transform = Callable[[torch.Tensor], torch.Tensor]


def channel_stats(images: torch.Tensor, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of ``N x C x H x W`` ``images / scale``, summed in float64 and
    rounded to float32: the same figures at any thread count. A float32 reduction splits its sums by thread,
    so the statistics (and every normalised image) moved in the 8th digit between a 1-thread and a 2-thread
    process that built the same named workload."""
    mean, std = [], []
    for c in range(images.shape[1]):
        values = images[:, c].double() / scale
        mean.append(values.mean().float().item())
        std.append(values.std().float().item())
    return mean, std


class TensorImageDataset(Dataset):
    """Images held in one tensor, with a per-sample ``transform``. ``prepare``, a deterministic transform
    that gives every image the same result alone or in a batch (dtype, resize, normalisation), runs once
    over all the images, on first access; ``transform`` (the random augmentation, or ``None``) then runs on
    each prepared image as it is served. Both give exactly what ``transform(prepare(image))`` per image
    gives (``tests/test_datasets.py``), without repeating the resize on every epoch and evaluation."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform | None,
        prepare: Transform | None = None,
    ) -> None:
        self.images, self.labels, self.transform, self.prepare = images, labels, transform, prepare
        self._prepared: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def prepared(self) -> torch.Tensor:
        """The images after ``prepare`` (the images themselves without one), computed once."""
        if self._prepared is None:
            self._prepared = self.images if self.prepare is None else self.prepare(self.images)
        return self._prepared

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.prepared()[index]
        return image if self.transform is None else self.transform(image), int(self.labels[index])


@dataclass(frozen=True)
class Workload:
    """A labelled dataset for one bench run: ``train`` (augmented) for the dense baselines, ``test`` held
    out. ``recovery`` is what pruning and recovery train on: the whole train split, or a seeded subset of
    it where a full epoch would not fit the bench's budget. ``family`` keys the baseline recipes
    (:mod:`pruners.models`); ``classes`` names the labels where the source does (else their indices)."""

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
    classes: tuple[str, ...] = ()

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


# The input size of the embedded digits and, unless a run or a model's entry names another, of a named
# dataset.
DEFAULT_IMG_SIZE = 32


def digits(img_size: int = DEFAULT_IMG_SIZE, test_fraction: float = 0.2, seed: int = 0) -> Workload:
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
    mean, std = channel_stats(train_images.reshape(-1, 1, img_size, img_size))
    normalize = v2.Normalize(mean * 3, std * 3)
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


@register_workload("digits", family="digits")
def _create_digits(name: str, model_name: str | None, options: Mapping[str, object]) -> Workload:
    """scikit-learn's handwritten digits, embedded: the default."""
    return digits()
