"""One training recipe, used for the dense baselines and, with a smaller budget, for recovery fine-tunes."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from itertools import islice

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from .data import Workload
from .decisions import weights_fingerprint
from .measure import device_of
from .progress import progress


@dataclass(frozen=True)
class Recipe:
    """AdamW with a per-step cosine schedule and label smoothing; the workload supplies augmentation.

    ``distill`` > 0 mixes in knowledge distillation from a teacher (Hinton et al., 2015, "Distilling the
    Knowledge in a Neural Network"): the loss is ``(1 - distill) * CE(labels) + distill * T^2 *
    KL(teacher || student)`` on logits softened by ``temperature`` T.

    ``channels_last`` trains in the NHWC memory format (timm's ``train.py --channels-last``): the same
    arithmetic in another order, so another float path; depthwise convolutions run about twice as fast
    in it on a CPU. The model leaves :func:`train` in the default format either way.
    """

    epochs: int
    lr: float
    warmup_epochs: int = 0
    batch_size: int = 64
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    distill: float = 0.0
    temperature: float = 4.0
    channels_last: bool = False

    def settings(self) -> dict[str, float | int]:
        """The fields that differ from their defaults: what identifies the recipe.

        A field added later with a default leaves the keys and caches of existing recipes alone.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    @property
    def key(self) -> str:
        """A short hash of :meth:`settings`, for cache keys."""
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:10]


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence from the teacher's to the student's softened distribution, scaled by T^2."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


class TeacherLogits:
    """The logits a teacher gave each training batch, kept for this process's later fine-tunes from it.

    Every case of one seed recovers on the same batches from the same dense model, so its forward pass
    runs once per batch and process, not once per case. A batch is found by its bytes and the teacher by
    its weights, device, thread count and memory format, so what is found is what the forward pass gives;
    the teachers used longest ago go first once the kept logits pass ``budget`` bytes.
    """

    def __init__(self, budget: int = 256 * 2**20) -> None:
        self.budget = budget
        self.size = 0
        self.kept: OrderedDict[tuple[str, str, int, str], dict[bytes, torch.Tensor]] = OrderedDict()

    def of(
        self, teacher: nn.Module, memory_format: torch.memory_format
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``logits(batch, images)``: ``teacher``'s logits on ``images``, the loader's ``batch`` moved to
        the device in ``memory_format``, run only the first time this teacher sees that batch."""
        key = (
            weights_fingerprint(teacher),
            str(device_of(teacher)),
            torch.get_num_threads(),
            str(memory_format),
        )
        kept = self.kept.setdefault(key, {})
        self.kept.move_to_end(key)

        def logits(batch: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            digest = hashlib.sha256(str(tuple(batch.shape)).encode())
            digest.update(batch.contiguous().numpy())
            found = kept.get(batch_key := digest.digest())
            if found is None:
                with torch.no_grad():
                    found = kept[batch_key] = teacher(images)
                self.size += found.numel() * found.element_size()
                while self.size > self.budget and len(self.kept) > 1:
                    _, gone = self.kept.popitem(last=False)
                    self.size -= sum(t.numel() * t.element_size() for t in gone.values())
            return found

        return logits


TEACHER_LOGITS = TeacherLogits()


def train(
    model: nn.Module,
    workload: Workload,
    recipe: Recipe,
    seed: int = 0,
    desc: str = "train",
    teacher: nn.Module | None = None,
    regularize: Callable[[nn.Module], None] | None = None,
    on_epoch: Callable[[], None] | None = None,
    split: str = "train",
) -> None:
    """Train ``model`` in place on ``workload``'s ``split`` with ``recipe``, on the model's device, showing
    its progress (:mod:`pruners.progress`): ``"train"`` for dense baselines, ``"recovery"`` for what
    follows pruning.

    A recipe that distils needs the ``teacher``, which is only run, never trained. Sparse training passes
    ``regularize(model)``, called between ``backward()`` and the optimizer step, and ``on_epoch()``,
    called after every epoch.
    """
    if recipe.distill and teacher is None:
        raise ValueError(f"recipe distils (distill={recipe.distill}) but no teacher was given")
    if teacher is not None:
        teacher.eval()
    memory_format = torch.channels_last if recipe.channels_last else torch.preserve_format
    model.to(memory_format=memory_format)
    teacher_logits = TEACHER_LOGITS.of(teacher, memory_format) if recipe.distill else None
    torch.manual_seed(seed)
    loader = workload.loader(split, recipe.batch_size, seed=seed)
    optimizer = create_optimizer_v2(model, "adamw", lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=recipe.epochs,
        warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.lr / 100,
        min_lr=recipe.lr / 100,
        step_on_epochs=False,
        updates_per_epoch=len(loader),
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    device = next(model.parameters()).device
    model.train()
    step = 0
    with progress(desc, recipe.epochs, len(loader)) as shown:
        for _ in range(recipe.epochs):
            for batch, labels in loader:
                images = batch.to(device, non_blocking=True, memory_format=memory_format)
                labels = labels.to(device, non_blocking=True)
                logits = model(images)
                loss = criterion(logits, labels)
                if teacher_logits is not None:
                    kd = distill_loss(logits, teacher_logits(batch, images), recipe.temperature)
                    loss = (1 - recipe.distill) * loss + recipe.distill * kd
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if regularize is not None:
                    regularize(model)
                optimizer.step()
                step += 1
                scheduler.step_update(step)
                shown.step(loss.item())
            shown.epoch()
            if on_epoch is not None:
                on_epoch()
    model.to(memory_format=torch.contiguous_format)
    model.eval()


# BatchNorm statistics of a pruned model are re-estimated on this many training batches of this size.
RECALIBRATION_BATCHES = 16
RECALIBRATION_BATCH_SIZE = 64


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (timm's ``BatchNormAct2d`` included)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    workload: Workload,
    batches: int = RECALIBRATION_BATCHES,
    batch_size: int = RECALIBRATION_BATCH_SIZE,
    seed: int = 0,
) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose BatchNorm running means and variances are re-estimated as plain averages
    over ``batches`` batches of ``batch_size`` recovery images, and the number of images it saw. No weight
    changes, and every other layer runs in eval mode. Pruning leaves the dense statistics behind, which no
    longer fit the thinner layers: this is the "BN recalibration" of pruning papers (e.g. Li et al., 2020,
    "EagleEye"), the criterion's quality without fine-tuning. A model without BatchNorm comes back as an
    unchanged copy that saw no images."""
    model = copy.deepcopy(model).eval()
    norms = batchnorms(model)
    if not norms:
        return model, 0
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    device, seen = next(model.parameters()).device, 0
    for images, _ in islice(workload.loader("recovery", batch_size, seed=seed), batches):
        model(images.to(device))
        seen += len(images)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    return model.eval(), seen
