"""Sparse training, then pruning: a regulariser pushes unimportant channels towards zero during a few
epochs of training, then DepGraph removes the channels it emptied.

The harness owns the epochs: a method gets ``data.sparse_train`` and hands it its regulariser. They come
out of the same budget as every other method's recovery fine-tune (see :func:`pruners.case.split_budget`),
so a sparse-training row costs what the others cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch_pruning as tp
from torch import nn

from .registry import MethodData, register_method
from .structured import apply, channel_pruner

# Regulariser strengths, on the gradient that AdamW then normalises.
BN_SCALE_REG = 1e-4
GROUP_NORM_REG = 5e-4
GROWING_REG = 1e-4
GROWING_REG_STEP = 1e-4


def regularise_then_prune(
    model: nn.Module,
    ratio: float,
    example_inputs: torch.Tensor,
    data: MethodData,
    importance: tp.importance.Importance,
    pruner_type: type[tp.pruner.BasePruner],
    on_epoch: Callable[[tp.pruner.BasePruner], None] | None = None,
    **options: object,
) -> None:
    """The step every sparse-training method shares: build the Torch-Pruning ``pruner_type``, let the
    harness train with its regulariser (``on_epoch(pruner)`` after each epoch), then prune."""
    pruner = channel_pruner(model, importance, ratio, example_inputs, pruner_type=pruner_type, **options)
    data.sparse_train(model, pruner.regularize, lambda: on_epoch(pruner) if on_epoch else None)
    apply(pruner, model)


@register_method(
    "bn_scale",
    kind="structured",
    needs=("train",),
    requires=("batchnorm",),
    tolerance=3.0,
    default_ratio=0.3,
)
def bn_scale(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Network slimming: L1 on the BatchNorm scales while training, then the channels with the smallest
    scales go.

    Liu et al., 2017, "Learning Efficient Convolutional Networks through Network Slimming".
    """
    importance = tp.importance.BNScaleImportance()
    regularise_then_prune(
        model, ratio, example_inputs, data, importance, tp.pruner.BNScalePruner, reg=BN_SCALE_REG
    )


@register_method("group_norm", kind="structured", needs=("train",), tolerance=5.0, default_ratio=0.3)
def group_norm(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Group-level sparsity: a group-lasso-like penalty on every DepGraph group (all coupled layers at
    once) while training, then the groups with the smallest L2 norm go.

    Fang et al., 2023, "DepGraph: Towards Any Structural Pruning" (CVPR).
    """
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    regularise_then_prune(
        model, ratio, example_inputs, data, importance, tp.pruner.GroupNormPruner, reg=GROUP_NORM_REG
    )


@register_method("growing_reg", kind="structured", needs=("train",), tolerance=5.0, default_ratio=0.3)
def growing_reg(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Growing regularisation: an L2 penalty per channel that grows after every epoch, faster for the
    channels that are already weak, then the weakest groups go.

    Wang et al., 2021, "Neural Pruning via Growing Regularization" (ICLR).
    """
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    regularise_then_prune(
        model,
        ratio,
        example_inputs,
        data,
        importance,
        tp.pruner.GrowingRegPruner,
        on_epoch=tp.pruner.GrowingRegPruner.update_reg,
        reg=GROWING_REG,
        delta_reg=GROWING_REG_STEP,
    )
