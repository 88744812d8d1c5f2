"""What a bench run works on, from its options: the data (embedded digits, a dataset named the timm way such
as ``torch/fashion_mnist``, or your folder), the dense weights
(trained here, timm pretrained or a checkpoint), the device and how latency is timed.

:func:`bench_settings` checks every option before any case runs, so a bad one is one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm

from . import recipes, zoo
from .data import Workload
from .datasets import dataset_family
from .files import CACHE_ENV, cache_dir, check_writable
from .matrix import Case
from .measure import TimingOptions, resolve_device
from .models import model_img_size, smallest_input
from .options import OPTIONS, check, split_csv
from .runtimes import check_runtimes
from .spec import CaseSpec, Recipes, Timing, Weights
from .workloads import create_workload


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
    recovery_lr: float | None = None
    scratch: bool = False
    weights: Weights = field(default_factory=Weights)
    timing: TimingOptions = field(default_factory=TimingOptions)
    latency_size: int | str | None = None
    runtimes: list[str] = field(default_factory=list)
    batch_size: int = 64
    latency_rounds: int = 20
    _workloads: dict[str, Workload] = field(default_factory=dict, repr=False)

    def workload(self, model_name: str) -> Workload:
        """The embedded digits, the named dataset (at ``img_size``, else at ``model_name``'s size on it,
        :func:`pruners.models.model_img_size`: shared by the models of one size), or the data folder
        through ``model_name``'s own timm data config."""
        if self.dataset is not None:
            key = str(self.img_size or model_img_size(model_name, dataset_family(self.dataset)))
        else:
            key = model_name if self.data_dir is not None else ""
        if key not in self._workloads:
            self._workloads[key] = self._build(model_name)
        return self._workloads[key]

    def _build(self, model_name: str) -> Workload:
        if self.dataset is not None:
            name = self.dataset
        elif self.data_dir is not None:
            name = f"folder:{self.data_dir}"
        else:
            name = "digits"
        return create_workload(
            name,
            model_name,
            root=self.data_dir,
            download=self.download,
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

    def spec(self, case: Case, seeds: Sequence[int], timed: bool = True) -> CaseSpec:
        """The :class:`pruners.CaseSpec` of ``case`` in this run (``timed=False``: no latency rounds)."""
        return CaseSpec(
            case.model,
            case.method,
            case.ratio,
            case.speedup,
            workload=self.workload(case.model),
            seeds=tuple(seeds),
            recipes=Recipes(
                recovery_epochs=self.recovery_epochs, recovery_lr=self.recovery_lr, scratch=self.scratch
            ),
            weights=self.weights,
            timing=Timing(
                batch_size=self.batch_size,
                rounds=self.latency_rounds if timed else None,
                options=self.timing,
                size=self.latency_size_for(case.model),
                runtimes=tuple(self.runtimes),
            ),
            latency_speedup=case.latency,
        )


def bench_settings(models: Sequence[str], values: Mapping[str, object]) -> BenchSettings:
    """Check the option ``values`` (by :data:`pruners.options.OPTIONS` name; a missing one takes the table's
    default) against the ``models`` the run will prune, and build their workloads and dense weights once;
    any problem is a ``ValueError`` (or :class:`pruners.DataDirError` /
    :class:`pruners.WeightsUnavailableError`) with one line that names the parameter in backticks
    (:func:`pruners.options.as_flags` turns it into the flag).

    ``latency_size`` is a pixel count, or ``"model"`` for each model's pretrained input size; ``runtimes``
    the comma-separated runtimes to time in besides (:data:`pruners.runtimes.RUNTIMES`). The cache folder
    must be writable, and every split must hold a batch: the training splits one of the recipe's, the
    held-out split ``batch_size`` images.
    """
    option = {o.name: o.default for o in OPTIONS} | dict(values)
    check(option)
    check_writable(cache_dir(), f"the cache folder (${CACHE_ENV}, default ~/.cache/prunebench)", folder=True)
    data_dir, dataset = option["data_dir"], option["dataset"]
    for name in ("img_size", "train_images", "test_images"):
        if option[name] is not None and data_dir is None and dataset is None:
            raise ValueError(f"`{name}` applies to `dataset` and `data_dir`; the embedded digits are fixed")
    if dataset is not None:
        dataset_family(dataset)
    if option["skip_bad_images"] and data_dir is None:
        raise ValueError("`skip_bad_images` applies to `data_dir` (an image folder)")
    if option["dataset_download"] and dataset is None:
        raise ValueError("`dataset_download` downloads a `dataset`; name one (e.g. torch/cifar10)")
    if not 0.0 <= option["hflip"] <= 1.0:
        raise ValueError(f"`hflip` is a probability in [0, 1], got {option['hflip']}")
    crop_scale = option["crop_scale"]
    if crop_scale is not None and not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"`crop_scale` is a fraction of the image in (0, 1], got {crop_scale}")
    pretrained, checkpoint = option["pretrained"], option["checkpoint"]
    if pretrained and checkpoint:
        raise ValueError("`pretrained` and `checkpoint` both name the dense weights: pass one")
    if checkpoint and len(set(models)) != 1:
        raise ValueError(
            f"`checkpoint` holds one model's weights; pick one with `models`, not {len(set(models))}"
        )
    weights = Weights(
        pretrained=pretrained,
        checkpoint=Path(checkpoint) if checkpoint else None,
        device=str(resolve_device(option["device"])),
    )
    runtimes = check_runtimes(split_csv(option["runtimes"]))
    if "onnxruntime" in runtimes and not weights.device.startswith("cpu"):
        raise ValueError("`runtimes` onnxruntime times ONNX Runtime's CPU provider: run it with `device` cpu")
    latency_size = option["latency_size"]
    size: int | str | None = latency_size
    if latency_size is not None and latency_size != "model":
        if not str(latency_size).isdigit() or int(latency_size) < 1:
            raise ValueError(f"`latency_size` is a pixel count or 'model', got {latency_size!r}")
        size = int(latency_size)
    settings = BenchSettings(
        data_dir=Path(data_dir) if data_dir else None,
        dataset=dataset,
        download=option["dataset_download"],
        img_size=option["img_size"],
        train_images=option["train_images"],
        test_images=option["test_images"],
        hflip=option["hflip"],
        crop_scale=crop_scale,
        skip_bad_images=option["skip_bad_images"],
        recovery_epochs=option["recovery_epochs"],
        recovery_lr=option["recovery_lr"],
        scratch=bool(option.get("scratch")),
        weights=weights,
        timing=TimingOptions(channels_last=option["channels_last"], amp=option["amp"]),
        latency_size=size,
        runtimes=runtimes,
        batch_size=option["batch_size"],
        latency_rounds=option["latency_rounds"],
    )
    for model in dict.fromkeys(models):
        _check_model(settings, model)
    return settings


def _check_model(settings: BenchSettings, model: str) -> None:
    """Refuse what ``model`` cannot run on: an input size below its total stride, a held-out split smaller
    than the batch, training splits smaller than one recipe batch; load the pretrained or checkpoint weights
    once, so a missing one is a line before any case."""
    img_size = settings.img_size
    if img_size is not None:
        smallest = smallest_input(model)
        if img_size < smallest:
            raise ValueError(
                f"`img_size` {img_size} px is below what {model} can take: its last stage downsamples "
                f"{smallest}x, so it needs at least {smallest} px"
            )
    workload = settings.workload(model)
    if settings.batch_size > len(workload.test):
        raise ValueError(
            f"`batch_size` {settings.batch_size} is larger than the {len(workload.test)} held-out images of "
            f"{workload.name}"
        )
    batch = recipes.baseline_recipe(model, workload).batch_size
    for split in ("train", "recovery"):
        data = workload.recovery if split == "recovery" and workload.recovery is not None else workload.train
        if len(data) < batch:
            raise ValueError(
                f"the {split} split of {workload.name} holds {len(data)} images, fewer than one training "
                f"batch of {batch}: add images (or a larger `train_images`)"
            )
    if settings.weights.pretrained or settings.weights.checkpoint:
        zoo.create_model(
            model, workload, pretrained=settings.weights.pretrained, checkpoint=settings.weights.checkpoint
        )
