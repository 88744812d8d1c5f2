"""Structured (channel / head) pruning through Torch-Pruning's DepGraph.

Each method only chooses an importance criterion (and, for gradient criteria, fills ``.grad`` from the
calibration batches); :func:`prune_channels` is the shared pruning step.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from . import decisions
from .adapters import (
    attention_heads,
    channel_rounding,
    classifier_layers,
    ignored_parameters,
    left_whole,
    prunable_heads,
    prune_channel_extras,
    sync_attention,
    sync_layer_scales,
    unwrapped_parameters,
)
from .layer_pruners import customized_pruners, mis_mapped_groups, multiplier_feeders, split_input_feeders
from .registry import CalibBatches, MethodData, register_method

# Remaining channel counts are rounded to a multiple of this, as CPU and GPU kernels favour.
ROUND_TO = 8
_round_to: ContextVar[int] = ContextVar("round_to", default=ROUND_TO)


@contextlib.contextmanager
def channel_multiple(multiple: int) -> Iterator[None]:
    """Round remaining channel counts to ``multiple`` instead of :data:`ROUND_TO` inside this block (a MACs
    target search relaxes it when multiples of 8 jump over the target)."""
    token = _round_to.set(multiple)
    try:
        yield
    finally:
        _round_to.reset(token)


# Inside only_group(name), apply() prunes just the dependency group rooted at that layer (sensitivity).
_only_group: ContextVar[str | None] = ContextVar("only_group", default=None)


@contextlib.contextmanager
def only_group(root: str) -> Iterator[None]:
    """Inside this block a structured method prunes only the dependency group whose root layer is named
    ``root`` (its name in the model), at the ratio it was asked for: one point of a layer-sensitivity scan
    (:mod:`pruners.sensitivity`)."""
    token = _only_group.set(root)
    try:
        yield
    finally:
        _only_group.reset(token)


# Global rankings may take at most this fraction of any one group's channels, so no layer is emptied.
MAX_GROUP_RATIO = 0.9
# Per-sample gradients for the diagonal Fisher (OBD's Hessian estimate) come from this many images.
FISHER_SAMPLES = 64


def channel_pruner(
    model: nn.Module,
    importance: tp.importance.Importance,
    ratio: float,
    example_inputs: torch.Tensor,
    *,
    pruner_type: type[tp.pruner.BasePruner] = tp.pruner.BasePruner,
    global_ranking: bool = False,
    isomorphic: bool = False,
    **options: object,
) -> tp.pruner.BasePruner:
    """A DepGraph pruner that removes ``ratio`` of the channels of every dependency group, ranked by
    ``importance``; :func:`apply` runs it.

    With ``global_ranking`` the ranking spans all groups at once, so layers lose different fractions
    (at most ``MAX_GROUP_RATIO`` each) and ``ratio`` holds for the network as a whole; ``isomorphic``
    ranks only among groups of the same structure. ``pruner_type`` and ``options`` choose another
    Torch-Pruning pruner (the sparse-training ones) and its settings.
    The family rules of :mod:`pruners.adapters` apply: the classifier head and Swin's relative position
    tables are left alone, attention keeps its head count and loses head dimensions, Swin's patch merging
    has its own rule, and channel counts left are multiples of ``ROUND_TO`` (unless grouped convolutions
    forbid it; :func:`channel_multiple` sets another multiple).
    """
    ignored = [
        *classifier_layers(model),
        *left_whole(model),
        *ignored_parameters(model),
    ]

    def build(ignored_layers: list[nn.Module | nn.Parameter]) -> tp.pruner.BasePruner:
        return pruner_type(
            model,
            example_inputs,
            importance=importance,
            pruning_ratio=ratio,
            global_pruning=global_ranking,
            isomorphic=isomorphic,
            max_pruning_ratio=MAX_GROUP_RATIO if global_ranking else 1.0,
            ignored_layers=ignored_layers,
            num_heads=attention_heads(model),
            unwrapped_parameters=unwrapped_parameters(model),
            customized_pruners=customized_pruners(model),
            round_to=channel_rounding(model, _round_to.get()),
            **options,
        )

    pruner = build(ignored)
    held = [
        *multiplier_feeders(pruner.DG, pruner.ignored_layers),
        *split_input_feeders(pruner.DG, pruner.ignored_layers),
    ]
    mis_mapped = mis_mapped_groups(pruner.DG, pruner.ignored_layers + held)
    if mis_mapped:
        warnings.warn(
            f"Torch-Pruning maps the channels of {len(mis_mapped)} layers past the end of a layer they "
            "depend on; those layers are left whole",
            stacklevel=2,
        )
    held += mis_mapped
    # Rebuilt rather than patched, so the pruner's channel totals (global ranking) leave them out too.
    return build(ignored + held) if held else pruner


# Torch-Pruning's rules for the output channels of convolutions and linear layers.
_OUT_CHANNEL_RULES = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


def apply(pruner: tp.pruner.BasePruner, model: nn.Module) -> None:
    """Run ``pruner`` on ``model``, pruning the extra per-channel parameters of layer subclasses along with
    their layers, and bring attention and layer-scale bookkeeping in line with the new widths. Inside
    :func:`pruners.decisions.recording` every group is logged before it is pruned."""
    note = decisions.watch(pruner, model)
    only = _only_group.get()
    names = {module: name for name, module in model.named_modules()} if only is not None else {}
    for group in pruner.step(interactive=True):
        if only is not None and names.get(group[0].dep.target.module) != only:
            continue
        if note is not None:
            note(group)
        for dep, idxs in group:
            if dep.handler in _OUT_CHANNEL_RULES:
                prune_channel_extras(dep.target.module, idxs)
        group.prune()
    sync_attention(model, pruner.num_heads)
    sync_layer_scales(model)


def prune_channels(
    model: nn.Module,
    importance: tp.importance.Importance,
    ratio: float,
    example_inputs: torch.Tensor,
    **options: object,
) -> None:
    """Build a :func:`channel_pruner` and :func:`apply` it: the pruning step most methods share."""
    apply(channel_pruner(model, importance, ratio, example_inputs, **options), model)


def loss_gradients(model: nn.Module, calib: CalibBatches) -> None:
    """Leave the gradient of the cross-entropy, summed over the calibration batches, in every ``.grad``."""
    model.zero_grad()
    for images, labels in calib:
        F.cross_entropy(model(images), labels).backward()


def fisher_diagonal(model: nn.Module, calib: CalibBatches, samples: int = FISHER_SAMPLES) -> None:
    """Leave the mean squared per-sample gradient (the diagonal Fisher) in every ``.grad``.

    Torch-Pruning's own ``GroupHessianImportance.accumulate_grad`` keys its sums by parameter but checks
    for names, so it keeps only the last sample; this computes the mean here instead.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    squares = [torch.zeros_like(p) for p in params]
    images = torch.cat([x for x, _ in calib])[:samples]
    labels = torch.cat([y for _, y in calib])[:samples]
    for image, label in zip(images, labels, strict=True):
        loss = F.cross_entropy(model(image[None]), label[None])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for total, grad in zip(squares, grads, strict=True):
            if grad is not None:
                total += grad.square()
    for p, total in zip(params, squares, strict=True):
        p.grad = total / len(images)


@register_method("random", kind="structured", tolerance=1.5, default_ratio=0.3)
def random_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Random channels: the control every criterion must beat.

    Li et al., 2022, "Revisiting Random Channel Pruning for Neural Network Compression".
    """
    prune_channels(model, tp.importance.RandomImportance(), ratio, example_inputs)


@register_method("l1", kind="structured", tolerance=2.0, default_ratio=0.3)
def l1_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Channels with the smallest group L1 norm go first.

    Li et al., 2017, "Pruning Filters for Efficient ConvNets"; groups from DepGraph (Fang et al., 2023).
    """
    prune_channels(model, tp.importance.GroupMagnitudeImportance(p=1), ratio, example_inputs)


@register_method("l2", kind="structured", tolerance=1.0, default_ratio=0.3)
def l2_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Channels with the smallest group L2 norm go first.

    He et al., 2018, "Soft Filter Pruning for Accelerating Deep Convolutional Neural Networks".
    """
    prune_channels(model, tp.importance.GroupMagnitudeImportance(p=2), ratio, example_inputs)


@register_method("fpgm", kind="structured", tolerance=0.5, default_ratio=0.3)
def fpgm_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Channels nearest the geometric median of their layer go first: the others can stand in for them.

    He et al., 2019, "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
    Acceleration".
    """
    prune_channels(model, tp.importance.FPGMImportance(p=2), ratio, example_inputs)


@register_method("lamp", kind="structured", tolerance=1.0, default_ratio=0.3)
def lamp_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Layer-adaptive magnitude: each channel's squared norm over the sum of the larger ones in its layer,
    ranked globally, so layers lose different fractions.

    Lee et al., 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning".
    """
    prune_channels(model, tp.importance.LAMPImportance(p=2), ratio, example_inputs, global_ranking=True)


@register_method("l1_global", kind="structured", tolerance=1.0, default_ratio=0.3)
def l1_global_channels(
    model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData
) -> None:
    """Group L1 norms ranked across all layers at once (at most 90 % of any group), not layer by layer.

    Global magnitude ranking as in Torch-Pruning's ``global_pruning`` (Fang et al., 2023, "DepGraph").
    """
    prune_channels(
        model, tp.importance.GroupMagnitudeImportance(p=1), ratio, example_inputs, global_ranking=True
    )


@register_method("isomorphic", kind="structured", tolerance=1.5, default_ratio=0.3)
def isomorphic_channels(
    model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData
) -> None:
    """Group L2 norms ranked globally, but only among groups of the same structure (isomorphic groups).

    Fang et al., 2024, "Isomorphic Pruning for Vision Models" (ECCV).
    """
    prune_channels(
        model,
        tp.importance.GroupMagnitudeImportance(p=2),
        ratio,
        example_inputs,
        global_ranking=True,
        isomorphic=True,
    )


@register_method("taylor", kind="structured", needs=("grad",), tolerance=1.5, default_ratio=0.3)
def taylor_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """First-order Taylor estimate of the loss change, |w · dL/dw|, from the calibration batches.

    Molchanov et al., 2019, "Importance Estimation for Neural Network Pruning".
    """
    data.fill_gradients(model, loss_gradients)
    prune_channels(model, tp.importance.GroupTaylorImportance(), ratio, example_inputs)
    model.zero_grad()


@register_method("hessian", kind="structured", needs=("grad",), tolerance=1.0, default_ratio=0.3)
def hessian_channels(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Optimal Brain Damage: w² times the diagonal Hessian, estimated by the per-sample Fisher.

    LeCun et al., 1989, "Optimal Brain Damage".
    """
    data.fill_gradients(model, fisher_diagonal)
    prune_channels(model, tp.importance.GroupHessianImportance(), ratio, example_inputs)
    model.zero_grad()


@register_method(
    "vit_heads", kind="structured", unit="heads", requires=("attention",), tolerance=3.0, default_ratio=0.3
)
def vit_heads(model: nn.Module, ratio: float, example_inputs: torch.Tensor, data: MethodData) -> None:
    """Whole attention heads with the smallest group L2 norm go, ``ratio`` of each layer's heads
    (rounded up); head sizes and MLP widths stay.

    Michel et al., 2019, "Are Sixteen Heads Really Better than One?"; head groups from DepGraph.
    """
    prune_channels(
        model,
        tp.importance.GroupMagnitudeImportance(p=2),
        0.0,
        example_inputs,
        pruning_ratio_dict=dict.fromkeys(prunable_heads(model), ratio),
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
    )
