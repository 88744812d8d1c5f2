"""Structured (channel / head) pruning through Torch-Pruning's DepGraph.

Each method only chooses an importance criterion; :func:`prune_channels` is the shared pruning step.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from .adapters import attention_heads, classifier_layers, sync_attention, token_parameters
from .registry import CalibBatches, register_method

# Remaining channel counts are rounded to a multiple of this, as CPU and GPU kernels favour.
ROUND_TO = 8


def prune_channels(
    model: nn.Module, importance: tp.importance.Importance, ratio: float, example_inputs: torch.Tensor
) -> None:
    """Remove ``ratio`` of the channels of every dependency group, ranked by ``importance`` (DepGraph).

    The classifier head is ignored; ViT attention keeps its head count and loses head dimensions;
    channel counts left are multiples of ``ROUND_TO``.
    """
    pruner = tp.pruner.BasePruner(
        model,
        example_inputs,
        importance=importance,
        pruning_ratio=ratio,
        ignored_layers=classifier_layers(model),
        num_heads=attention_heads(model),
        unwrapped_parameters=token_parameters(model),
        round_to=ROUND_TO,
    )
    pruner.step()
    sync_attention(model, pruner.num_heads)


@register_method("random", kind="structured", tolerance=2.5, default_ratio=0.3)
def random_channels(
    model: nn.Module, ratio: float, example_inputs: torch.Tensor, calib: CalibBatches | None
) -> None:
    """Random channels: the control every criterion must beat.

    Li et al., 2022, "Revisiting Random Channel Pruning for Neural Network Compression".
    """
    prune_channels(model, tp.importance.RandomImportance(), ratio, example_inputs)


@register_method("l1", kind="structured", tolerance=3.0, default_ratio=0.3)
def l1_channels(
    model: nn.Module, ratio: float, example_inputs: torch.Tensor, calib: CalibBatches | None
) -> None:
    """Channels with the smallest group L1 norm go first.

    Li et al., 2017, "Pruning Filters for Efficient ConvNets"; groups from DepGraph (Fang et al., 2023).
    """
    prune_channels(model, tp.importance.GroupMagnitudeImportance(p=1), ratio, example_inputs)
