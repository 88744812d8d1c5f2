"""The recipes a case runs with: the dense baseline's (per model and workload family, :mod:`pruners.models`)
and the recovery's, the fine-tune every pruned model and the dense control get, with the budget measured
for that model on that family."""

from __future__ import annotations

import dataclasses

from .data import Workload
from .models import folder_recipe, get_model
from .train import Recipe

# Weight of the distillation term in the recovery loss (0 turns distillation off); see recovery_recipe.
RECOVERY_DISTILL = 0.5


def baseline_recipe(model_name: str, workload: Workload | str = "digits") -> Recipe:
    """The recipe that trains ``model_name``'s dense baseline on ``workload`` or a workload of that family
    (:mod:`pruners.models`). On an image folder it is :func:`pruners.models.folder_recipe`: a number of
    optimizer steps set by the resolution, whatever the folder's size."""
    if isinstance(workload, str):
        return get_model(model_name).recipe_for(workload)
    recipe = get_model(model_name).recipe_for(workload.family)
    if workload.family == "folder":
        return folder_recipe(recipe, len(workload.train), workload.img_size)
    return recipe


def recovery_budget(model_name: str, workload: Workload | str = "digits") -> dict[str, float | None]:
    """The recovery budget measured for ``model_name`` on ``workload``'s family, as keyword arguments of
    :func:`recovery_recipe`: ``epochs`` of its recovery subset (``None``: a third of the
    baseline's) and peak ``lr`` (``None``: the baseline's)."""
    family = workload if isinstance(workload, str) else workload.family
    entry = get_model(model_name)
    return {"epochs": entry.recovery_epochs_for(family), "lr": entry.recovery_lr_for(family)}


def recovery_recipe(
    baseline: Recipe, distill: float = RECOVERY_DISTILL, epochs: int | None = None, lr: float | None = None
) -> Recipe:
    """The fine-tune every method gets after pruning: ``epochs`` (default: a third of the baseline's) at
    peak ``lr`` (default: the baseline's), distilling from the dense model with weight ``distill``."""
    epochs = max(1, baseline.epochs // 3) if epochs is None else epochs
    lr = baseline.lr if lr is None else lr
    return dataclasses.replace(baseline, epochs=epochs, lr=lr, warmup_epochs=0, distill=distill)


def case_recipes(
    model_name: str, workload: Workload | str = "digits", distill: float = RECOVERY_DISTILL
) -> tuple[Recipe, Recipe]:
    """``(baseline recipe, recovery recipe)`` of a case of ``model_name`` on ``workload``: the dense
    baseline's and the fine-tune after pruning with the budget measured for that workload's family."""
    dense = baseline_recipe(model_name, workload)
    return dense, recovery_recipe(dense, distill, **recovery_budget(model_name, workload))
