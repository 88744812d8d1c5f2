"""What a bench run works on, from its options: the data (embedded digits, a dataset named the timm way such
as ``torch/fashion_mnist``, or your folder), the dense weights
(trained here, timm pretrained or a checkpoint), the device and how latency is timed.

:func:`bench_settings` checks every option before any case runs, so a bad one is one clear line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm

from . import zoo
from .case import Weights
from .data import Workload, dataset_family, digits, image_folder, torch_dataset
from .files import CACHE_ENV, cache_dir, check_writable
from .measure import TimingOptions, resolve_device
from .runtimes import check_runtimes


@dataclass
class BenchSettings:
    """The data, weights, device and timing of one bench run; :meth:`workload` is built once per model
    (once in all for the embedded digits, which are the same for every model)."""

    data_dir: Path | None = None
    dataset: str | None = None
    download: bool = False
    img_size: int | None = None
    train_images: int | None = None
    test_images: int | None = None
    hflip: float = 0.5
    crop_scale: float | None = None
    skip_bad_images: bool = False
    recovery_epochs: int | None = None
    weights: Weights = field(default_factory=Weights)
    timing: TimingOptions = field(default_factory=TimingOptions)
    latency_size: int | str | None = None
    runtimes: list[str] = field(default_factory=list)
    _workloads: dict[str, Workload] = field(default_factory=dict, repr=False)

    def workload(self, model_name: str) -> Workload:
        """The embedded digits, the named dataset (the same for every model), or the data folder through
        ``model_name``'s own timm data config."""
        key = model_name if self.data_dir is not None and self.dataset is None else ""
        if key not in self._workloads:
            self._workloads[key] = self._build(model_name)
        return self._workloads[key]

    def _build(self, model_name: str) -> Workload:
        if self.dataset is not None:
            return torch_dataset(
                self.dataset,
                self.data_dir,
                download=self.download,
                img_size=self.img_size or 32,
                train_images=self.train_images,
                test_images=self.test_images,
            )
        if self.data_dir is None:
            return digits()
        return image_folder(
            self.data_dir,
            model_name,
            img_size=self.img_size,
            train_images=self.train_images,
            test_images=self.test_images,
            hflip=self.hflip,
            crop_scale=self.crop_scale,
            skip_unreadable=self.skip_bad_images,
        )

    def latency_size_for(self, model_name: str) -> int | None:
        """The extra input size to time ``model_name`` at: ``--latency-size N``, or for ``model`` its
        pretrained input size (timm's default config); ``None`` when not asked."""
        if self.latency_size == "model":
            size = timm.models.get_pretrained_cfg_value(model_name, "input_size")
            return size[-1] if size else None
        return self.latency_size


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def bench_settings(
    models: Sequence[str],
    *,
    batch_size: int,
    data_dir: str | None = None,
    dataset: str | None = None,
    download: bool = False,
    img_size: int | None = None,
    train_images: int | None = None,
    test_images: int | None = None,
    hflip: float = 0.5,
    crop_scale: float | None = None,
    skip_bad_images: bool = False,
    recovery_epochs: int | None = None,
    pretrained: bool = False,
    checkpoint: str | None = None,
    device: str = "cpu",
    channels_last: bool = False,
    amp: bool = False,
    latency_size: str | None = None,
    runtimes: Sequence[str] = (),
) -> BenchSettings:
    """Check the options against the ``models`` the run will prune and build their workloads and dense
    weights once; any problem is a ``ValueError`` (or :class:`pruners.DataDirError` /
    :class:`pruners.WeightsUnavailableError`) with one line that names it.

    ``latency_size`` is a pixel count, or ``"model"`` for each model's pretrained input size; ``runtimes``
    the runtimes to time in besides (:data:`pruners.runtimes.RUNTIMES`). The cache
    folder must be writable, and every split must hold a batch: the training splits one of the recipe's,
    the held-out split ``batch_size`` images.
    """
    check_writable(cache_dir(), f"the cache folder (${CACHE_ENV}, default ~/.cache/prunebench)", folder=True)
    for name, value in (
        ("--img-size", img_size),
        ("--train-images", train_images),
        ("--test-images", test_images),
    ):
        _positive(name, value)
        if value is not None and data_dir is None and dataset is None:
            raise ValueError(f"{name} applies to --dataset and --data-dir; the embedded digits are fixed")
    if dataset is not None:
        dataset_family(dataset)
    if skip_bad_images and data_dir is None:
        raise ValueError("--skip-bad-images applies to --data-dir (an image folder)")
    if download and dataset is None:
        raise ValueError("--dataset-download downloads a --dataset; name one (e.g. torch/cifar10)")
    _positive("--recovery-epochs", recovery_epochs)
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"--hflip is a probability in [0, 1], got {hflip}")
    if crop_scale is not None and not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"--crop-scale is a fraction of the image in (0, 1], got {crop_scale}")
    if pretrained and checkpoint:
        raise ValueError("--pretrained and --checkpoint both name the dense weights: pass one")
    if checkpoint and len(set(models)) != 1:
        raise ValueError(
            f"--checkpoint holds one model's weights; pick one with --models, not {len(set(models))}"
        )
    weights = Weights(
        pretrained=pretrained,
        checkpoint=Path(checkpoint) if checkpoint else None,
        device=str(resolve_device(device)),
    )
    runtimes = check_runtimes(runtimes)
    if "onnxruntime" in runtimes and not weights.device.startswith("cpu"):
        raise ValueError("--runtime onnxruntime times ONNX Runtime's CPU provider: run it with --device cpu")
    size: int | str | None = latency_size
    if latency_size is not None and latency_size != "model":
        if not latency_size.isdigit() or int(latency_size) < 1:
            raise ValueError(f"--latency-size is a pixel count or 'model', got {latency_size!r}")
        size = int(latency_size)
    settings = BenchSettings(
        data_dir=Path(data_dir) if data_dir else None,
        dataset=dataset,
        download=download,
        img_size=img_size,
        train_images=train_images,
        test_images=test_images,
        hflip=hflip,
        crop_scale=crop_scale,
        skip_bad_images=skip_bad_images,
        recovery_epochs=recovery_epochs,
        weights=weights,
        timing=TimingOptions(channels_last=channels_last, amp=amp),
        latency_size=size,
        runtimes=runtimes,
    )
    for model in dict.fromkeys(models):
        workload = settings.workload(model)
        if batch_size > len(workload.test):
            raise ValueError(
                f"--batch-size {batch_size} is larger than the {len(workload.test)} held-out images of "
                f"{workload.name}"
            )
        batch = zoo.baseline_recipe(model, workload).batch_size
        for split in ("train", "recovery"):
            data = (
                workload.recovery if split == "recovery" and workload.recovery is not None else workload.train
            )
            if len(data) < batch:
                raise ValueError(
                    f"the {split} split of {workload.name} holds {len(data)} images, fewer than one training "
                    f"batch of {batch}: add images (or a larger --train-images)"
                )
        if pretrained or checkpoint:
            zoo.create_model(model, workload, pretrained=pretrained, checkpoint=weights.checkpoint)
    return settings
