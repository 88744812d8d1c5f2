"""One training recipe, used for the dense baselines and, with a smaller budget, for recovery fine-tunes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from tqdm.auto import tqdm

from .data import Workload


@dataclass(frozen=True)
class Recipe:
    """AdamW with a per-step cosine schedule and label smoothing; the workload supplies augmentation."""

    epochs: int
    lr: float
    warmup_epochs: int = 0
    batch_size: int = 64
    weight_decay: float = 0.05
    label_smoothing: float = 0.1

    @property
    def key(self) -> str:
        """A short hash of every field, for cache keys."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def train(model: nn.Module, workload: Workload, recipe: Recipe, seed: int = 0, desc: str = "train") -> None:
    """Train ``model`` in place on ``workload.train`` with ``recipe``, showing a tqdm progress bar."""
    torch.manual_seed(seed)
    loader = workload.loader("train", recipe.batch_size, seed=seed)
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
    model.train()
    step = 0
    with tqdm(total=recipe.epochs * len(loader), desc=desc, unit="batch", leave=False) as bar:
        for _ in range(recipe.epochs):
            for images, labels in loader:
                loss = criterion(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                scheduler.step_update(step)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
